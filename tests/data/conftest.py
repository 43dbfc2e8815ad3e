"""Hand-made raw logs for the ingest, split and targets tests.

The `handmade` log (dates: end_date 2022-03-30 12:00:00, train_target_start 2022-03-03 00:00:00,
validation_target_start 2022-03-17 00:00:00) puts events on every boundary; the expected outputs
are written out by hand in test_split.py and test_targets.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ubp import schema as S

TRAIN_START = "2022-03-03 00:00:00"
BEFORE_TRAIN = "2022-03-02 23:59:59"
VALIDATION_START = "2022-03-17 00:00:00"
BEFORE_VALIDATION = "2022-03-16 23:59:59"
END_DATE = "2022-03-30 12:00:00"
AFTER_END = "2022-04-01 08:00:00"

# The four spacing styles of the real files, all meaning 0, 1, ..., 15 (+ offset).
VECTOR_STYLES = {
    "numpy": lambda v: "[" + " ".join(f"{x:3d}" for x in v) + "]",
    "single": lambda v: "[" + " ".join(str(x) for x in v) + "]",
    "wrapped": lambda v: "[" + " ".join(f"{x:3d}" for x in v[:9]) + "\n" + " ".join(f"{x:3d}" for x in v[9:]) + "]",
    "padded": lambda v: "[  " + "  ".join(str(x) for x in v) + " ]",
}


def vector(offset: int = 0, style: str = "numpy") -> str:
    return VECTOR_STYLES[style]([(offset + i * 17) % 256 for i in range(S.VECTOR_DIM)])


def parsed(offset: int = 0) -> list[int]:
    return [(offset + i * 17) % 256 for i in range(S.VECTOR_DIM)]


def events(rows: list[tuple], value_column: str) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[S.CLIENT_ID, S.TIMESTAMP, value_column]).astype({S.CLIENT_ID: "int64"})


def write_raw(root: Path, tables: dict[str, pd.DataFrame | pa.Table], relevant: np.ndarray,
              target: dict[str, np.ndarray] | None = None) -> Path:
    """Write a directory in the raw layout (SPEC §2)."""
    (root / "input").mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        if isinstance(frame, pa.Table):  # e.g. to keep a real NaN, which pandas would write as NULL
            pq.write_table(frame, root / f"{name}.parquet")
        else:
            frame.to_parquet(root / f"{name}.parquet", index=False)
    np.save(root / S.RELEVANT_CLIENTS_FILE, relevant)
    if target:
        (root / "target").mkdir(exist_ok=True)
        for name, array in target.items():
            np.save(root / "target" / name, array)
    return root


# sku -> (category, price)
PRODUCTS = {1: (10, 5), 2: (10, 7), 3: (20, 5), 4: (30, 9), 5: (30, 9), 6: (20, 7), 7: (40, 1), 8: (40, 1), 9: (50, 3)}
RELEVANT = np.array([105, 101, 104, 103, 102], dtype=np.int64)
OTHER = 900  # a non-relevant client whose purchases still count for label sets


def handmade_tables() -> dict[str, pd.DataFrame]:
    buys = [
        (900, "2022-03-05 10:00:00", 2),  # train window, rows deliberately not in time order
        (101, BEFORE_TRAIN, 1),  # 101's only input purchase: active because of this second
        (101, TRAIN_START, 4),
        (102, TRAIN_START, 2),  # 102's first purchase: not active
        (103, "2022-02-10 09:00:00", 8),
        (103, BEFORE_VALIDATION, 1),
        (103, BEFORE_VALIDATION, 1),  # an exact duplicate row: kept and counted
        (900, "2022-03-05 10:00:00", 2),
        (105, "2022-01-15 12:00:00", 5),
        (900, "2022-03-06 11:00:00", 6),
        (900, "2022-03-07 12:00:00", 5),
        (900, "2022-03-08 13:00:00", 3),
        (900, "2022-03-09 14:00:00", 8),
        (900, "2022-03-09 14:00:05", 8),
        (102, VALIDATION_START, 7),
        (103, END_DATE, 3),  # the latest purchase: defines end_date
        (900, "2022-03-20 10:00:00", 4),
        (900, "2022-03-21 10:00:00", 7),
        (900, "2022-03-22 10:00:00", 7),
        (900, "2022-03-23 10:00:00", 9),
    ]
    carts = [
        (900, "2022-02-01 10:00:00", 5),  # trap: sku 5 seen before the window -> not new
        (104, BEFORE_TRAIN, 2),
        (104, TRAIN_START, 4),  # not input: does not stop sku 4 being new
        (900, AFTER_END, 9),  # after end_date: unused
    ]
    removes = [
        (900, "2022-02-02 10:00:00", 6),  # trap: sku 6 -> not new
        (103, TRAIN_START, 1),
    ]
    visits = [
        (104, "2022-02-20 10:00:00", 1000),
        (104, BEFORE_TRAIN, 1001),
        (104, TRAIN_START, 1002),
        (104, AFTER_END, 1003),
    ]
    searches = [
        (104, "2022-02-21 10:00:00", vector(1, "single")),
        (104, BEFORE_TRAIN, vector(2, "wrapped")),
        (104, TRAIN_START, vector(3, "padded")),
        (104, AFTER_END, vector(4, "numpy")),
    ]
    styles = list(VECTOR_STYLES)
    properties = pd.DataFrame(
        [(sku, cat, price, vector(sku, styles[sku % 4])) for sku, (cat, price) in PRODUCTS.items()],
        columns=list(S.PROPERTY_COLUMNS))
    return {
        S.PRODUCT_BUY: events(buys, S.SKU),
        S.ADD_TO_CART: events(carts, S.SKU),
        S.REMOVE_FROM_CART: events(removes, S.SKU),
        S.PAGE_VISIT: events(visits, S.URL),
        S.SEARCH_QUERY: events(searches, S.QUERY),
        S.PROPERTIES: properties,
    }


@pytest.fixture
def handmade_raw(tmp_path) -> Path:
    return write_raw(tmp_path / "raw", handmade_tables(), RELEVANT)


@pytest.fixture
def handmade_split(tmp_path, handmade_raw) -> dict[str, Path]:
    from ubp.data.ingest import ingest
    from ubp.data.split import split

    dirs = {"raw": handmade_raw, "canonical": tmp_path / "canonical", "split": tmp_path / "split"}
    ingest(dirs["raw"], dirs["canonical"])
    split(dirs["canonical"], dirs["split"])
    return dirs
