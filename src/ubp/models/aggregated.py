"""The challenge's aggregated-features baseline, exactly as the official code computes it (SPEC §9.1).

Reference: `baseline/aggregated_features_baseline/` of Synerise/recsys2025 (commit e91c1a6). Blocks
in the order buy, add, remove, visit, search. A count block starts with the client's number of
events of that type, then per window and per counted column (sku, category, price; url) the counts
of the column's top-N values; the search block is the mean query vector. Official quirks, kept:
the events are first restricted to the clients asked for (ctx.client_ids, "the relevant clients"),
and both the top-N values and `max_date` (the latest event of that type) come from those events;
a window of d days starts at `max_date - d days`, but the counted rows are the client's last ones
*in file order* (as many as have a timestamp inside the window), not those inside the window; top
values are ordered as pandas 2.2's value_counts() does (descending by numpy's unstable quicksort
over the values in order of first appearance); counts and means are rounded to float16. numpy's
quicksort kernel depends on the CPU (AVX-512, AVX2, baseline), so where top values tie the column
order — and at the top-N cut the columns — follow the CPU, in the official code and here alike.

Width: 1 + len(windows) * (top values found) per count block, + 16: 320 at the defaults when every
column has >= 10 distinct values. Clients with no events get zeros (the official code omits them).
All in DuckDB over the asked-for clients' events only (a semi-join first), so 1M clients stay bounded.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from ubp import schema
from ubp.db import sql_text, timestamp_sql
from ubp.features.build import connect_for
from ubp.models.base import EmbedContext, EmbeddingConfig

# event type -> the columns whose top values are counted, in the official order
COUNTED_COLUMNS = {
    schema.PRODUCT_BUY: (schema.SKU, schema.CATEGORY, schema.PRICE),
    schema.ADD_TO_CART: (schema.SKU, schema.CATEGORY, schema.PRICE),
    schema.REMOVE_FROM_CART: (schema.SKU, schema.CATEGORY, schema.PRICE),
    schema.PAGE_VISIT: (schema.URL,),
}
BATCH_ROWS = 100_000  # client rows fetched at a time (bounds the int64 copies at 1M clients)


READS = ("events", "properties")
TABULAR = True


@dataclasses.dataclass(frozen=True)
class Config(EmbeddingConfig):
    windows: tuple[int, ...] = (1, 7, 30)  # the official --num-days
    top_n: int = 10  # the official --top-n
    threads: int = 2  # DuckDB threads (no effect on the values)


def events_sql(ctx: EmbedContext, event_type: str) -> str:
    """The asked-for clients' events of the type before ctx.cutoff, with `r`, their row in the file
    (the official code reads the file in that order), category and price joined for product events."""
    source = f"read_parquet({sql_text(ctx.events(event_type))}, file_row_number = true)"
    where = (f"e.{schema.TIMESTAMP} < {timestamp_sql(ctx.cutoff)} "
             f"AND e.{schema.CLIENT_ID} IN (SELECT {schema.CLIENT_ID} FROM clients)")
    columns = f"e.{schema.CLIENT_ID}, e.{schema.TIMESTAMP}, e.file_row_number AS r"
    if event_type in schema.PRODUCT_EVENTS:
        return (f"SELECT {columns}, e.{schema.SKU}, p.{schema.CATEGORY}, p.{schema.PRICE} FROM {source} e "
                f"JOIN read_parquet({sql_text(ctx.properties_path)}) p USING ({schema.SKU}) WHERE {where}")
    return f"SELECT {columns}, e.{schema.EVENT_VALUE_COLUMN[event_type]} FROM {source} e WHERE {where}"


def value_counts_order(counts: np.ndarray) -> np.ndarray:
    """The order pandas 2.2's value_counts() puts values in, given their counts in order of first
    appearance: pandas' nargsort, descending = reverse, argsort(kind="quicksort"), reverse. numpy's
    quicksort is not stable, so equal counts come out in its order, which the official top values
    (and so the column order) inherit; pandas 3 sorts stably and gives other columns on ties."""
    counts = np.asarray(counts, dtype=np.int64)
    ascending_of_reversed = np.argsort(counts[::-1], kind="quicksort")
    return (len(counts) - 1 - ascending_of_reversed)[::-1]


def top_values(con, events: str, column: str, top_n: int) -> tuple[np.ndarray, datetime | None]:
    """The column's top_n values over `events` in the official order, and the latest timestamp."""
    got = con.execute(
        f"SELECT {column} AS value, count(*) AS n, min(r) AS first, max({schema.TIMESTAMP}) AS latest "
        f"FROM ({events}) GROUP BY {column}").fetchnumpy()
    if len(got["n"]) == 0:
        return np.zeros(0, np.int64), None
    appearance = np.argsort(got["first"], kind="stable")  # numpy sorts the millions of URLs faster than SQL
    order = appearance[value_counts_order(got["n"][appearance])[:top_n]]
    return np.asarray(got["value"], np.int64)[order], got["latest"].max().astype("datetime64[us]").item()


def count_sql(events: str, max_date: datetime, windows: tuple[int, ...], top: dict[str, np.ndarray]) -> str:
    """Per client: its event count, then per window and column the counts of each top value among its
    rows k >= b (k: rank in file order, b: its events before the window's start). That is the official
    searchsorted on the sorted timestamps followed by a slice of the unsorted rows."""
    before = [f"count(*) FILTER (WHERE {schema.TIMESTAMP} < {timestamp_sql(max_date - timedelta(days=d))}) "
              f"OVER (PARTITION BY {schema.CLIENT_ID}) AS b{i}" for i, d in enumerate(windows)]
    counts = [f"count(*) FILTER (WHERE k >= b{i} AND {column} = {int(value)})"
              for i in range(len(windows)) for column, values in top.items() for value in values]
    ranked = (f"SELECT *, row_number() OVER (PARTITION BY {schema.CLIENT_ID} ORDER BY r) - 1 AS k, "
              f"{', '.join(before)} FROM ({events})")
    return f"SELECT {schema.CLIENT_ID}, {', '.join(['count(*)', *counts])} FROM ({ranked}) GROUP BY {schema.CLIENT_ID}"


def query_sql(events: str) -> str:
    sums = ", ".join(f"sum({schema.QUERY}[{i + 1}])::BIGINT" for i in range(schema.VECTOR_DIM))
    return f"SELECT {schema.CLIENT_ID}, count(*), {sums} FROM ({events}) GROUP BY {schema.CLIENT_ID}"


def query_means(block: np.ndarray) -> np.ndarray:
    """Rows (count, 16 sums) -> the float16 means numpy's float16 mean() gives: the sum in float32
    (exact below 2**24), divided by an intp count (in float64, stored to float32), then float16."""
    sums = block[:, 1:].astype(np.float32)
    np.true_divide(sums, block[:, :1].astype(np.intp), out=sums, casting="unsafe")
    return sums.astype(np.float16)


def fill(con, sql: str, out: np.ndarray, convert) -> None:
    """Scatter the rows of `sql` (client_id, values...) into `out` at the clients' rows."""
    reader = con.sql(f"SELECT c.row, f.* EXCLUDE ({schema.CLIENT_ID}) FROM clients c "
                     f"JOIN ({sql}) f USING ({schema.CLIENT_ID})").to_arrow_reader(BATCH_ROWS)
    for batch in reader:
        columns = [batch.column(i).to_numpy() for i in range(batch.num_columns)]
        out[columns[0]] = convert(np.column_stack(columns[1:]).astype(np.int64))


def event_block(con, ctx: EmbedContext, event_type: str, cfg: Config) -> np.ndarray:
    events = events_sql(ctx, event_type)
    if event_type == schema.SEARCH_QUERY:
        block = np.zeros((len(ctx.client_ids), schema.VECTOR_DIM), np.float16)
        fill(con, query_sql(events), block, query_means)
        return block
    top, max_date = {}, None
    for column in COUNTED_COLUMNS[event_type]:
        top[column], max_date = top_values(con, events, column, cfg.top_n)
    width = 1 + len(cfg.windows) * sum(len(v) for v in top.values())
    block = np.zeros((len(ctx.client_ids), width), np.float16)
    if max_date is not None:  # float64 -> float16, the rounding of the official float16 += count
        fill(con, count_sql(events, max_date, cfg.windows, top), block,
             lambda counts: counts.astype(np.float64).astype(np.float16))
    return block


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    """float16, one row per ctx.client_ids entry, the official columns (see the module docstring)."""
    with connect_for(ctx.feature_settings, threads=cfg.threads) as con:
        con.register("clients_arrow", pa.table({schema.CLIENT_ID: np.asarray(ctx.client_ids, np.int64),
                                                "row": np.arange(len(ctx.client_ids), dtype=np.int64)}))
        con.execute("CREATE TEMP TABLE clients AS SELECT * FROM clients_arrow")
        return np.concatenate([event_block(con, ctx, e, cfg) for e in schema.EVENT_TYPES], axis=1)
