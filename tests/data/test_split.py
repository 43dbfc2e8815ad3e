"""Split: window boundaries to the second on the hand-made log (see conftest.py)."""
from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from tests.data.conftest import (AFTER_END, BEFORE_TRAIN, END_DATE, RELEVANT, TRAIN_START, VALIDATION_START,
                                 handmade_tables, write_raw)
from ubp import schema as S
from ubp.data.split import split, split_dates
from ubp.io import UbpError

TARGET_COLUMNS = [S.CLIENT_ID, S.TIMESTAMP, S.SKU, S.CATEGORY, S.PRICE, S.NAME]


def read(path) -> pd.DataFrame:
    return pd.read_parquet(path)


def rows(frame: pd.DataFrame, value_column: str) -> list[tuple]:
    return [(c, t.strftime(S.TIMESTAMP_FORMAT), v) for c, t, v in
            zip(frame[S.CLIENT_ID], frame[S.TIMESTAMP], frame[value_column])]


def test_split_dates_truncate_to_midnight():
    assert split_dates(dt.datetime(2022, 3, 30, 12, 0, 0)) == (dt.datetime(2022, 3, 3), dt.datetime(2022, 3, 17))
    assert split_dates(dt.datetime(2022, 3, 30, 0, 0, 0)) == (dt.datetime(2022, 3, 3), dt.datetime(2022, 3, 17))
    assert split_dates(dt.datetime(2022, 3, 29, 23, 59, 59)) == (dt.datetime(2022, 3, 2), dt.datetime(2022, 3, 16))


def test_split_json(handmade_split):
    info = json.loads((handmade_split["split"] / S.SPLIT_FILE).read_text())
    assert info["end_date"] == END_DATE
    assert info["train_target_start"] == TRAIN_START
    assert info["validation_target_start"] == VALIDATION_START
    assert info["rows"] == {
        "input": {S.PRODUCT_BUY: 3, S.ADD_TO_CART: 2, S.REMOVE_FROM_CART: 1, S.PAGE_VISIT: 2, S.SEARCH_QUERY: 2},
        S.TRAIN_TARGET: 11, S.VALIDATION_TARGET: 6}


def test_input_is_strictly_before_train_target_start(handmade_split):
    split_dir, tables = handmade_split["split"], handmade_tables()
    for event in S.EVENT_TYPES:
        got = read(split_dir / "input" / f"{event}.parquet")
        assert list(got.columns) == list(tables[event].columns)
        raw = tables[event]
        expected = raw[raw[S.TIMESTAMP] < TRAIN_START]  # string order = time order for this format
        value = S.EVENT_VALUE_COLUMN[event]
        if event == S.SEARCH_QUERY:
            assert got[S.CLIENT_ID].tolist() == expected[S.CLIENT_ID].tolist()
            assert got[S.TIMESTAMP].dt.strftime(S.TIMESTAMP_FORMAT).tolist() == expected[S.TIMESTAMP].tolist()
        else:
            assert rows(got, value) == list(expected.itertuples(index=False, name=None))
    buys = rows(read(split_dir / "input" / f"{S.PRODUCT_BUY}.parquet"), S.SKU)
    assert (101, BEFORE_TRAIN, 1) in buys and all(t != TRAIN_START for _, t, _ in buys)
    visits = read(split_dir / "input" / f"{S.PAGE_VISIT}.parquet")[S.URL].tolist()
    assert visits == [1000, 1001]  # at train_target_start - 1 s: in; at train_target_start / after end: out


def test_targets_windows_order_and_join(handmade_split):
    split_dir = handmade_split["split"]
    train = read(split_dir / f"{S.TRAIN_TARGET}.parquet")
    validation = read(split_dir / f"{S.VALIDATION_TARGET}.parquet")
    assert list(train.columns) == TARGET_COLUMNS and list(validation.columns) == TARGET_COLUMNS
    assert rows(train, S.SKU) == [
        (900, "2022-03-05 10:00:00", 2), (101, TRAIN_START, 4), (102, TRAIN_START, 2),
        (103, "2022-03-16 23:59:59", 1), (103, "2022-03-16 23:59:59", 1), (900, "2022-03-05 10:00:00", 2),
        (900, "2022-03-06 11:00:00", 6), (900, "2022-03-07 12:00:00", 5), (900, "2022-03-08 13:00:00", 3),
        (900, "2022-03-09 14:00:00", 8), (900, "2022-03-09 14:00:05", 8)]
    assert rows(validation, S.SKU) == [
        (102, VALIDATION_START, 7), (103, END_DATE, 3), (900, "2022-03-20 10:00:00", 4),
        (900, "2022-03-21 10:00:00", 7), (900, "2022-03-22 10:00:00", 7), (900, "2022-03-23 10:00:00", 9)]
    props = read(handmade_split["canonical"] / f"{S.PROPERTIES}.parquet").set_index(S.SKU)
    for frame in (train, validation):
        assert frame[S.CATEGORY].tolist() == props.loc[frame[S.SKU], S.CATEGORY].tolist()
        assert frame[S.PRICE].tolist() == props.loc[frame[S.SKU], S.PRICE].tolist()
        assert [v.tolist() for v in frame[S.NAME]] == [v.tolist() for v in props.loc[frame[S.SKU], S.NAME]]


def split_of(tmp_path, tables: dict[str, pd.DataFrame]) -> tuple[dict, dict[str, pd.DataFrame]]:
    from ubp.data.ingest import ingest

    write_raw(tmp_path / "raw", tables, RELEVANT)
    ingest(tmp_path / "raw", tmp_path / "canonical")
    info = split(tmp_path / "canonical", tmp_path / "split")
    parts = {f"input/{e}": read(tmp_path / "split" / "input" / f"{e}.parquet") for e in S.EVENT_TYPES}
    parts |= {p: read(tmp_path / "split" / f"{p}.parquet") for p in (S.TRAIN_TARGET, S.VALIDATION_TARGET)}
    return info, parts


def test_end_date_is_the_latest_purchase_not_the_latest_event(tmp_path):
    """Carts, visits and searches after the last purchase (the log's AFTER_END rows, and a page visit
    four days later, within data.timestamps' plausible range) move no window and reach no output; a later
    purchase moves all three dates."""
    tables = handmade_tables()
    late_visit = pd.DataFrame({S.CLIENT_ID: [104], S.TIMESTAMP: ["2022-04-05 12:00:00"], S.URL: [1004]})
    tables[S.PAGE_VISIT] = pd.concat([tables[S.PAGE_VISIT], late_visit], ignore_index=True)
    info, parts = split_of(tmp_path / "visit", tables)
    assert (info["end_date"], info["train_target_start"], info["validation_target_start"]) == \
        (END_DATE, TRAIN_START, VALIDATION_START)
    stamps = {name: frame[S.TIMESTAMP].dt.strftime(S.TIMESTAMP_FORMAT).tolist() for name, frame in parts.items()}
    assert not [(name, t) for name, ts in stamps.items() for t in ts if t in (AFTER_END, "2022-04-05 12:00:00")]

    late_buy = pd.DataFrame({S.CLIENT_ID: [104], S.TIMESTAMP: ["2022-04-10 15:00:00"], S.SKU: [9]})
    tables[S.PRODUCT_BUY] = pd.concat([tables[S.PRODUCT_BUY], late_buy], ignore_index=True)
    info, parts = split_of(tmp_path / "buy", tables)
    # 2022-04-10 15:00 - 27 days = 2022-03-14 15:00, truncated to midnight; + 14 days
    assert (info["end_date"], info["train_target_start"], info["validation_target_start"]) == \
        ("2022-04-10 15:00:00", "2022-03-14 00:00:00", "2022-03-28 00:00:00")
    assert rows(parts[S.VALIDATION_TARGET], S.SKU) == [(103, END_DATE, 3), (104, "2022-04-10 15:00:00", 9)]
    assert rows(parts[f"input/{S.ADD_TO_CART}"], S.SKU) == [  # AFTER_END (2022-04-01) is still after the cutoff
        (900, "2022-02-01 10:00:00", 5), (104, BEFORE_TRAIN, 2), (104, TRAIN_START, 4)]


def test_split_needs_ingest(tmp_path):
    with pytest.raises(UbpError, match="run `python -m ubp ingest` first"):
        split(tmp_path / "nothing", tmp_path / "split")
