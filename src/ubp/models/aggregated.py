"""The challenge's aggregated-features baseline (SPEC §9.1).

Per event type: the number of events in each recent window, and for each of the type's columns
the number of events hitting each of that column's top-N most frequent values (over all input),
per window; plus the client's mean search-query vector.

Cost: per event type, one scan over every client's events for the top values (all of the type's
columns at once) and one over the relevant clients' events only (a semi-join before anything else)
grouped by client with every window's counts as FILTERed aggregates, so the grouping holds the
relevant clients, not all clients. DuckDB memory and spill directory: params.yaml's `features:`
(`memory_limit`, `temp_directory`, via ctx.feature_settings).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ubp import schema
from ubp.features.build import connect_for
from ubp.models.base import EmbedContext

# event type -> the columns whose top values are counted (category/price come from product_properties)
COUNTED_COLUMNS = {
    schema.PRODUCT_BUY: (schema.SKU, schema.CATEGORY, schema.PRICE),
    schema.ADD_TO_CART: (schema.SKU, schema.CATEGORY, schema.PRICE),
    schema.REMOVE_FROM_CART: (schema.SKU, schema.CATEGORY, schema.PRICE),
    schema.PAGE_VISIT: (schema.URL,),
    schema.SEARCH_QUERY: (),
}


def _events_sql(ctx: EmbedContext, event_type: str, relevant_only: bool) -> str:
    """The event type's rows strictly before ctx.cutoff (a profile "as of" the cutoff sees nothing later);
    with `relevant_only`, only those of the `clients` table, filtered before the properties join."""
    source = f"read_parquet('{ctx.events(event_type)}')"
    where = f"e.timestamp < TIMESTAMP '{ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)}'"
    if relevant_only:
        where += " AND e.client_id IN (SELECT client_id FROM clients)"
    if event_type in schema.PRODUCT_EVENTS:
        return (
            f"SELECT e.client_id, e.timestamp, e.sku, p.category, p.price FROM {source} e "
            f"JOIN read_parquet('{ctx.properties_path}') p USING (sku) WHERE {where}"
        )
    return f"SELECT * FROM {source} e WHERE {where}"


def _top_values(con, ctx: EmbedContext, event_type: str, top_n: int) -> dict[str, list[int]]:
    """Each counted column's top_n values over every client's events (most frequent first, ties by
    value), from one scan: one grouping set per column, ranked in SQL (a URL column has millions)."""
    columns = COUNTED_COLUMNS[event_type]
    if not columns:
        return {}
    # grouping(...) has a 1 bit for each column aggregated away, the first column highest
    full = (1 << len(columns)) - 1
    masks = {c: full - (1 << (len(columns) - 1 - i)) for i, c in enumerate(columns)}
    value = "CASE g " + " ".join(f"WHEN {m} THEN {c}" for c, m in masks.items()) + " END"
    grouped = (f"SELECT grouping({', '.join(columns)}) AS g, {', '.join(columns)}, count(*) AS n "
               f"FROM ({_events_sql(ctx, event_type, relevant_only=False)}) "
               f"GROUP BY GROUPING SETS ({', '.join(f'({c})' for c in columns)})")
    rows = con.execute(
        f"SELECT g, {value} AS value, n FROM ({grouped}) "
        f"QUALIFY row_number() OVER (PARTITION BY g ORDER BY n DESC, value) <= {int(top_n)} ORDER BY g, n DESC, value"
    ).fetchall()
    return {c: [int(r[1]) for r in rows if r[0] == m] for c, m in masks.items()}


def _feature_sql(con, ctx: EmbedContext, event_type: str, windows: list[int], top_n: int) -> tuple[str, list[str]]:
    """One SELECT over the relevant clients' events of the type, grouped by client, and the names of
    its feature columns."""
    top = _top_values(con, ctx, event_type, top_n)
    cutoff = ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)
    exprs, names = [], []
    for days in windows:
        in_window = f"timestamp >= TIMESTAMP '{cutoff}' - INTERVAL {int(days)} DAY"
        exprs.append(f"count(*) FILTER (WHERE {in_window})")
        names.append(f"{event_type}_count_{days}d")
        for column in COUNTED_COLUMNS[event_type]:
            for value in top[column]:
                exprs.append(f"count(*) FILTER (WHERE {in_window} AND {column} = {value})")
                names.append(f"{event_type}_{column}_{value}_{days}d")
    if event_type == schema.SEARCH_QUERY:
        exprs += [f"avg({schema.QUERY}[{i + 1}])" for i in range(schema.VECTOR_DIM)]
        names += [f"query_mean_{i}" for i in range(schema.VECTOR_DIM)]
    cols = ", ".join(f'{e} AS "{n}"' for e, n in zip(exprs, names))
    events = _events_sql(ctx, event_type, relevant_only=True)
    return f"SELECT client_id, {cols} FROM ({events}) GROUP BY client_id", names


def embed(ctx: EmbedContext, cfg: dict) -> np.ndarray:
    windows = [int(d) for d in cfg.get("windows", [1, 7, 30])]
    top_n = int(cfg.get("top_n", 10))
    blocks = []
    with connect_for(ctx.feature_settings, threads=int(cfg.get("threads", 2))) as con:
        con.register("clients_arrow", pa.table({"client_id": np.asarray(ctx.client_ids, np.int64),
                                                "row": np.arange(len(ctx.client_ids), dtype=np.int64)}))
        con.execute("CREATE TEMP TABLE clients AS SELECT * FROM clients_arrow")
        for event_type in schema.EVENT_TYPES:
            query, names = _feature_sql(con, ctx, event_type, windows, top_n)
            selected = ", ".join(f'coalesce(f."{n}", 0)::DOUBLE AS "{n}"' for n in names)
            block = con.execute(
                f"SELECT {selected} FROM clients c LEFT JOIN ({query}) f USING (client_id) ORDER BY c.row"
            ).fetchnumpy()
            blocks.append(np.column_stack([block[k] for k in block]).astype(np.float32))
    return np.concatenate(blocks, axis=1)
