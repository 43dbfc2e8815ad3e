"""Writing the synthetic dataset block by block: event files, the purchase accumulators, the oracle.

Each block of clients becomes rows of the five event files (shuffled within the block, like the
real files' unordered rows) appended through one buffered ParquetWriter per file, so memory
holds one block and one row group, never a whole file. What needs the whole dataset - the split
date (SPEC §3), the oracle's columns (top sellers of the target windows, SKUs unseen before the
split) - comes from `Purchases`, which keeps only the buys and each SKU's first product event.
The oracle's state is computed and appended in row blocks sized to the catalogue.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ubp import schema as S
from ubp.data.synthetic_catalog import format_vectors
from ubp.data.synthetic_oracle import oracle_sku_terms, oracle_state
from ubp.data.synthetic_events import DAY

ODD_SECONDS = 0.03  # timestamps that are not multiples of 5 s
ROW_GROUP_ROWS = 1 << 20  # pyarrow's default row-group length: buffered rows are flushed past it
ORACLE_CELLS = 12_500_000  # clients x categories per oracle row block (its largest arrays: ~100 MB each)
ORACLE_CATEGORIES = 160
ORACLE_SKUS = 192
ORACLE_NEW_SKUS = 128
TARGET_WINDOW_DAYS = 14  # SPEC §3: each target window is 14 days


def _timestamps(rng, t: np.ndarray, start: np.datetime64) -> pa.Array:
    odd = rng.random(len(t)) < ODD_SECONDS
    t = t + np.where(odd, rng.integers(1, 5, len(t)), 0)
    epoch = start.astype("datetime64[s]").astype(np.int64)
    # Arrow's cast writes a timestamp[s] as "%Y-%m-%d %H:%M:%S", the real files' text, ~35x faster than
    # pc.strftime (which was a third of the generator's time at the real size).
    return pc.cast(pa.array(t + epoch, type=pa.timestamp("s")), pa.string())


def shuffled_table(rng, columns: dict) -> pa.Table:
    """The columns as a table with rows in random order, like the real files."""
    n = len(next(iter(columns.values())))
    perm = rng.permutation(n)
    return pa.table({name: (col.take(pa.array(perm)) if isinstance(col, pa.Array) else col[perm]) for name, col in columns.items()})


def block_tables(rng, events: dict, ids: np.ndarray, cat, start: np.datetime64) -> dict[str, pa.Table]:
    """One block's events in the raw layout (ids, timestamp strings, vector strings), per event type."""
    tables = {}
    for name, ev in events.items():
        value_col = S.EVENT_VALUE_COLUMN[name]
        value = ev[value_col]
        if name == S.SEARCH_QUERY:
            value = format_vectors(rng, value)
        elif name != S.PAGE_VISIT:
            value = cat.sku_id[value]
        cols = {S.CLIENT_ID: ids[ev["client"]], S.TIMESTAMP: _timestamps(rng, ev["t"], start), value_col: value}
        tables[name] = shuffled_table(rng, cols)
    return tables


def event_schema(name: str) -> pa.Schema:
    value = pa.string() if name == S.SEARCH_QUERY else pa.int64()
    return pa.schema([(S.CLIENT_ID, pa.int64()), (S.TIMESTAMP, pa.string()), (S.EVENT_VALUE_COLUMN[name], value)])


class EventWriter:
    """One parquet file per event type, appended block by block; rows are buffered up to about a
    row group, so a one-block dataset is written exactly as one pq.write_table call would."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.buffers: dict[str, list[pa.Table]] = {name: [] for name in S.EVENT_TYPES}
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.rows = dict.fromkeys(S.EVENT_TYPES, 0)

    def add(self, tables: dict[str, pa.Table]) -> None:
        for name, table in tables.items():
            self.buffers[name].append(table)
            self.rows[name] += len(table)
            if sum(len(t) for t in self.buffers[name]) >= ROW_GROUP_ROWS:
                self._flush(name)

    def _flush(self, name: str) -> None:
        if name not in self.writers:
            path = self.out_dir / f"{name}.parquet"
            self.writers[name] = pq.ParquetWriter(path, event_schema(name), compression="snappy")
        buffered = self.buffers[name]
        if buffered:
            self.writers[name].write_table(buffered[0] if len(buffered) == 1 else pa.concat_tables(buffered))
        self.buffers[name] = []

    def close(self) -> None:
        for name in S.EVENT_TYPES:
            self._flush(name)  # also opens (and so writes) a file that got no rows
            self.writers[name].close()


class Purchases:
    """What the split and the oracle's columns need from all blocks: every buy (SKU index, second)
    and each SKU's first product event (buy, cart add or removal)."""

    def __init__(self, n_sku: int):
        self.sku: list[np.ndarray] = []
        self.t: list[np.ndarray] = []
        self.first_seen = np.full(n_sku, np.iinfo(np.int64).max, dtype=np.int64)

    def add(self, events: dict) -> None:
        buys = events[S.PRODUCT_BUY]
        self.sku.append(buys[S.SKU].astype(np.int32))
        self.t.append(buys["t"].astype(np.int64))
        for name in S.PRODUCT_EVENTS:
            np.minimum.at(self.first_seen, events[name][S.SKU], events[name]["t"])

    def buys(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.sku).astype(np.int64), np.concatenate(self.t)


def _top(counts: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Indices of the k largest positive counts (ties: lower index first)."""
    if allowed is not None:
        counts = np.where(allowed, counts, 0)
    order = np.lexsort((np.arange(len(counts)), -counts))[:k]
    return order[counts[order] > 0]


def oracle_columns(cat, purchases: Purchases, t_split: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which categories/SKUs the oracle describes: the most bought in the target windows (by all
    clients), so that the label sets of the propensity tasks are covered; and which of the SKUs
    had no product event before the split (the new-SKU task's pool)."""
    sku, t = purchases.buys()
    target = t >= t_split
    n_sku, n_cat = len(cat.sku_id), len(cat.cat_id)
    sku_counts = np.bincount(sku[target], minlength=n_sku)
    cat_counts = np.bincount(cat.sku_cat[sku[target]], minlength=n_cat)
    # The open tasks' label sets are the train window's top sellers: include them even where the two
    # windows together rank them lower (twice as many, as ties at the 100th place break by id there).
    first = target & (t < t_split + TARGET_WINDOW_DAYS * DAY)
    first_skus = np.bincount(sku[first], minlength=n_sku)
    first_cats = np.bincount(cat.sku_cat[sku[first]], minlength=n_cat)
    cat_cols = np.unique(np.concatenate([_top(cat_counts, ORACLE_CATEGORIES), _top(first_cats, 2 * S.N_TARGET_LABELS)]))
    seen = purchases.first_seen < t_split
    skus = np.concatenate([_top(sku_counts, ORACLE_SKUS), _top(first_skus, 2 * S.N_TARGET_LABELS),
                           _top(sku_counts, ORACLE_NEW_SKUS, ~seen)])
    skus = np.unique(skus)
    return np.sort(cat_cols), skus, ~seen[skus]


def write_oracle_state(path: Path, relevant, n: int, cat, t_split: float, cat_cols, sku_cols, day_weight, unseen) -> list[str]:
    """oracle/state.npy (the n relevant clients x columns, float32), from an iterable of the relevant
    clients block by block, appended in row blocks so that the (clients x categories) arrays of the
    expectations stay bounded; returns the column names."""
    rows = max(1, ORACLE_CELLS // len(cat.cat_id))
    columns, done = None, 0
    sku_terms = oracle_sku_terms(cat, t_split)
    with open(path, "wb") as f:
        for cl in relevant:
            for lo in range(0, cl.n_relevant, rows):
                part = cl if rows >= cl.n_relevant else cl.take(np.arange(lo, min(lo + rows, cl.n_relevant)))
                state, columns = oracle_state(part, cat, t_split, cat_cols, sku_cols, day_weight, unseen, sku_terms)
                if done == 0:
                    header = {"descr": np.lib.format.dtype_to_descr(state.dtype), "fortran_order": False,
                              "shape": (n, state.shape[1])}
                    np.lib.format.write_array_header_1_0(f, header)
                f.write(np.ascontiguousarray(state).tobytes())
                done += len(state)
    assert done == n and columns is not None
    return columns
