"""The challenge's aggregated-features baseline (SPEC §9.1).

Per event type: the number of events in each recent window, and for each of the type's columns
the number of events hitting each of that column's top-N most frequent values (over all input),
per window; plus the client's mean search-query vector.
"""
from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from ubp import schema
from ubp.models.base import EmbedContext

# event type -> the columns whose top values are counted (category/price come from product_properties)
COUNTED_COLUMNS = {
    schema.PRODUCT_BUY: (schema.SKU, schema.CATEGORY, schema.PRICE),
    schema.ADD_TO_CART: (schema.SKU, schema.CATEGORY, schema.PRICE),
    schema.REMOVE_FROM_CART: (schema.SKU, schema.CATEGORY, schema.PRICE),
    schema.PAGE_VISIT: (schema.URL,),
    schema.SEARCH_QUERY: (),
}


def _events_sql(ctx: EmbedContext, event_type: str) -> str:
    """The event type's rows strictly before ctx.cutoff (a profile "as of" the cutoff sees nothing later)."""
    source = f"read_parquet('{ctx.events(event_type)}')"
    before = f"timestamp < TIMESTAMP '{ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)}'"
    if event_type in schema.PRODUCT_EVENTS:
        return (
            f"SELECT e.client_id, e.timestamp, e.sku, p.category, p.price FROM {source} e "
            f"JOIN read_parquet('{ctx.properties_path}') p USING (sku) WHERE e.{before}"
        )
    return f"SELECT * FROM {source} WHERE {before}"


def _top_values(con, events: str, column: str, top_n: int) -> list[int]:
    rows = con.execute(
        f"SELECT {column} FROM ({events}) GROUP BY {column} ORDER BY count(*) DESC, {column} LIMIT {top_n}"
    ).fetchall()
    return [int(r[0]) for r in rows]


def _feature_sql(con, ctx: EmbedContext, event_type: str, windows: list[int], top_n: int) -> tuple[str, list[str]]:
    """One SELECT over the event type grouped by client, and the names of its feature columns."""
    events = _events_sql(ctx, event_type)
    cutoff = ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)
    exprs, names = [], []
    for days in windows:
        in_window = f"timestamp >= TIMESTAMP '{cutoff}' - INTERVAL {int(days)} DAY"
        exprs.append(f"count(*) FILTER (WHERE {in_window})")
        names.append(f"{event_type}_count_{days}d")
        for column in COUNTED_COLUMNS[event_type]:
            for value in _top_values(con, events, column, top_n):
                exprs.append(f"count(*) FILTER (WHERE {in_window} AND {column} = {value})")
                names.append(f"{event_type}_{column}_{value}_{days}d")
    if event_type == schema.SEARCH_QUERY:
        exprs += [f"avg({schema.QUERY}[{i + 1}])" for i in range(schema.VECTOR_DIM)]
        names += [f"query_mean_{i}" for i in range(schema.VECTOR_DIM)]
    cols = ", ".join(f'{e} AS "{n}"' for e, n in zip(exprs, names))
    return f"SELECT client_id, {cols} FROM ({events}) GROUP BY client_id", names


def embed(ctx: EmbedContext, cfg: dict) -> np.ndarray:
    windows = [int(d) for d in cfg.get("windows", [1, 7, 30])]
    top_n = int(cfg.get("top_n", 10))
    con = duckdb.connect()
    con.execute(f"SET threads TO {int(cfg.get('threads', 2))}")
    con.register("clients", pa.table({"client_id": ctx.client_ids, "row": np.arange(len(ctx.client_ids))}))
    blocks = []
    for event_type in schema.EVENT_TYPES:
        query, names = _feature_sql(con, ctx, event_type, windows, top_n)
        selected = ", ".join(f'coalesce(f."{n}", 0)::DOUBLE AS "{n}"' for n in names)
        block = con.execute(
            f"SELECT {selected} FROM clients c LEFT JOIN ({query}) f USING (client_id) ORDER BY c.row"
        ).fetchnumpy()
        blocks.append(np.column_stack([block[k] for k in block]).astype(np.float32))
    return np.concatenate(blocks, axis=1)
