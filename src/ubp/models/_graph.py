"""Client × entity interactions from the input events, shared by the graph and collaborative-filtering
profiles (cleora, ials, twhin): which clients a model is fitted on, each entity kind's vocabulary
(capped), and the weighted client × entity pairs — all in DuckDB, only events before ctx.cutoff.

Entity kinds: `sku` and `category` (product events: buy, add to cart, remove from cart; the category
from product_properties), `url` (page visits), `query` (search queries as (code position, code value)
tokens, 16 × 256 of them: identical queries are rare, shared codes are not).

Fitted clients: the relevant ones (rows 0..n-1, ctx order), then, up to `max_fit_clients` in all, a
seeded hash sample of the other clients with events: they cost little and tie more entities together
(the real data has 18 times more of them than relevant clients), and the cap bounds memory.
Vocabulary: entities touched by at least `min_clients` fitted clients (one that a single client
touched ties no two clients together), the `max_items` most touched first (ties by id).
Weights are summed as integers (units of 1/1000) so that DuckDB's parallel sums are exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from ubp import schema
from ubp.models.base import EmbedContext

KINDS = ("sku", "category", "url", "query")
QUERY_VOCAB = schema.VECTOR_DIM * 256
WEIGHT_UNITS = 1000


def cutoff_sql(ctx: EmbedContext) -> str:
    return f"TIMESTAMP '{ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)}'"


def event_types_of(kind: str) -> tuple[str, ...]:
    return {"url": (schema.PAGE_VISIT,), "query": (schema.SEARCH_QUERY,)}.get(kind, schema.PRODUCT_EVENTS)


def fit_clients(con, ctx: EmbedContext, max_fit_clients: int | None, seed: int) -> int:
    """Tables `relevant(client_id, row)` and `fit(client_id, row)` (relevant first, then the sample);
    returns the number of fitted clients."""
    n_rel = len(ctx.client_ids)
    con.register("relevant_arrow", pa.table({"client_id": np.asarray(ctx.client_ids, np.int64),
                                             "row": np.arange(n_rel, dtype=np.int64)}))
    con.execute("CREATE OR REPLACE TEMP TABLE relevant AS SELECT * FROM relevant_arrow")
    con.unregister("relevant_arrow")
    con.execute("CREATE OR REPLACE TEMP TABLE fit AS SELECT client_id, row FROM relevant")
    extra = (max_fit_clients or 0) - n_rel
    if extra > 0:
        active = " UNION ".join(f"SELECT client_id FROM read_parquet('{ctx.events(t)}') "
                                f"WHERE timestamp < {cutoff_sql(ctx)}" for t in schema.EVENT_TYPES)
        order = f"hash(client_id + {int(seed)}), client_id"
        con.execute(f"INSERT INTO fit SELECT client_id, {n_rel - 1} + row_number() OVER (ORDER BY {order}) "
                    f"FROM ({active}) WHERE client_id NOT IN (SELECT client_id FROM relevant) "
                    f"ORDER BY {order} LIMIT {extra}")
    return con.execute("SELECT count(*) FROM fit").fetchall()[0][0]


def _events_sql(ctx: EmbedContext, kind: str, weights: dict[str, float]) -> str:
    """client_id, item, w: one row per (event, entity) of the kind, before the cutoff, weight > 0."""
    parts = []
    for event_type in event_types_of(kind):
        weight = float(weights.get(event_type, 0.0))
        if weight <= 0:
            continue
        source = f"read_parquet('{ctx.events(event_type)}') e"
        where = f"WHERE e.timestamp < {cutoff_sql(ctx)}"
        if kind == "query":  # token = position * 256 + code
            parts.append(f"SELECT client_id, off + code AS item, w FROM (SELECT e.client_id, "
                         f"unnest(range(0, {QUERY_VOCAB}, 256)) AS off, unnest(e.query) AS code, "
                         f"{weight} AS w FROM {source} {where})")
            continue
        item = {"sku": "e.sku", "category": "p.category", "url": "e.url"}[kind]
        if kind == "category":
            source += f" JOIN read_parquet('{ctx.properties_path}') p USING (sku)"
        parts.append(f"SELECT e.client_id, {item} AS item, {weight} AS w FROM {source} {where}")
    return " UNION ALL ".join(parts) or "SELECT NULL::BIGINT AS client_id, NULL::BIGINT AS item, 0.0 AS w LIMIT 0"


@dataclass
class Pairs:
    """Fitted clients × one kind's kept entities: COO entries (row, col, weight) and the vocabulary."""
    rows: np.ndarray  # int64, rows of `fit`
    cols: np.ndarray  # int64, index into items
    weights: np.ndarray  # float64, summed event weights (> 0)
    items: np.ndarray  # int64 entity ids, most touched first
    n_rows: int

    def matrix(self, dtype=np.float32) -> sp.csr_matrix:
        x = sp.csr_matrix((self.weights.astype(dtype), (self.rows, self.cols)), shape=(self.n_rows, len(self.items)))
        x.sort_indices()
        return x


def pairs(con, ctx: EmbedContext, kind: str, weights: dict[str, float], min_clients: int, max_items: int | None,
          n_fit: int, table: str | None = None, fetch_below: int | None = None) -> Pairs:
    """The fitted clients' weighted pairs with the kind's kept entities. `table`: also keep them in
    DuckDB as a temp table (row, col, units) of that name; `fetch_below`: return only the rows below
    it (e.g. the relevant clients), the vocabulary still counting every fitted client."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _triples AS SELECT f.row, e.item, "
        f"CAST(sum(CAST(round(e.w * {WEIGHT_UNITS}) AS BIGINT)) AS BIGINT) AS units "
        f"FROM ({_events_sql(ctx, kind, weights)}) e JOIN fit f USING (client_id) GROUP BY f.row, e.item")
    limit = f"LIMIT {int(max_items)}" if max_items is not None else ""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _vocab AS SELECT item, row_number() OVER (ORDER BY df DESC, item) - 1 AS col "
        f"FROM (SELECT item, count(*) AS df FROM _triples WHERE units > 0 GROUP BY item "
        f"HAVING count(*) >= {int(min_clients)}) ORDER BY df DESC, item {limit}")
    items = con.execute("SELECT item FROM _vocab ORDER BY col").fetchnumpy()["item"].astype(np.int64)
    name = table or "_kept"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT t.row, v.col, t.units FROM _triples t "
                f"JOIN _vocab v USING (item) WHERE t.units > 0 ORDER BY t.row, v.col")
    where = f"WHERE row < {int(fetch_below)}" if fetch_below is not None else ""
    t = con.execute(f"SELECT row, col, units FROM {name} {where}").fetchnumpy()
    con.execute("DROP TABLE _triples")
    con.execute("DROP TABLE _vocab")
    if table is None:
        con.execute(f"DROP TABLE {name}")
    return Pairs(t["row"].astype(np.int64), t["col"].astype(np.int64),
                 t["units"].astype(np.float64) / WEIGHT_UNITS, items,
                 int(n_fit if fetch_below is None else min(n_fit, fetch_below)))
