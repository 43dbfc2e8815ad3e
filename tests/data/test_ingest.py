"""Ingest: every kind of bad input gives one UbpError naming file, column and row; good input parses."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.data.conftest import END_DATE, RELEVANT, VECTOR_STYLES, handmade_tables, parsed, vector, write_raw
from ubp import schema as S
from ubp.data.ingest import ingest
from ubp.io import UbpError


def ingest_tables(tmp_path, tables, relevant=RELEVANT, target=None):
    raw = write_raw(tmp_path / "raw", tables, relevant, target)
    out = tmp_path / "canonical"
    ingest(raw, out)
    return out


def set_value(frame: pd.DataFrame, row: int, column: str, value, dtype=None) -> pd.DataFrame:
    frame = frame.copy()
    if dtype is not None:
        frame[column] = frame[column].astype(dtype)
    frame.loc[row, column] = value
    return frame


def with_float(frame: pd.DataFrame, row: int, column: str, value: float) -> pa.Table:
    """`frame` as an arrow table whose `column` is float64 with `value` (NaN stays NaN) at `row`."""
    values = frame[column].astype("float64").to_numpy().copy()
    values[row] = value
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values, from_pandas=False))


def bad(file, column, row, problem):
    """Expected message parts: file name, column, row, problem."""
    parts = [f"{file}.parquet"]
    if column:
        parts.append(f"column '{column}'")
    if row is not None:
        parts.append(f"row {row} ")
    return parts + [problem]


def mutate(name, fn):
    def apply(tables):
        tables[name] = fn(tables[name])
        return tables
    return apply


BAD_TABLES = {
    "missing file": (lambda t: {k: v for k, v in t.items() if k != S.PAGE_VISIT}, bad(S.PAGE_VISIT, None, None, "not found")),
    "missing column": (mutate(S.PAGE_VISIT, lambda f: f.drop(columns=[S.URL])), bad(S.PAGE_VISIT, None, None, "missing column 'url'")),
    "string id": (mutate(S.ADD_TO_CART, lambda f: f.astype({S.CLIENT_ID: str})), bad(S.ADD_TO_CART, S.CLIENT_ID, None, "dtype VARCHAR")),
    "float vector list": (mutate(S.SEARCH_QUERY, lambda f: f.assign(query=[np.arange(16.0)] * len(f))), bad(S.SEARCH_QUERY, S.QUERY, None, "dtype")),
    "tz timestamp": (mutate(S.PAGE_VISIT, lambda f: f.assign(timestamp=pd.to_datetime(f.timestamp).dt.tz_localize("UTC"))), bad(S.PAGE_VISIT, S.TIMESTAMP, None, "dtype")),
    "bad month": (mutate(S.PRODUCT_BUY, lambda f: set_value(f, 2, S.TIMESTAMP, "2022-13-01 00:00:00")), bad(S.PRODUCT_BUY, S.TIMESTAMP, 2, "unparseable timestamp")),
    "date only": (mutate(S.REMOVE_FROM_CART, lambda f: set_value(f, 1, S.TIMESTAMP, "2022-03-01")), bad(S.REMOVE_FROM_CART, S.TIMESTAMP, 1, "unparseable timestamp")),
    "iso T": (mutate(S.PAGE_VISIT, lambda f: set_value(f, 3, S.TIMESTAMP, "2022-03-01T10:00:00")), bad(S.PAGE_VISIT, S.TIMESTAMP, 3, "unparseable timestamp")),
    "15 numbers": (mutate(S.SEARCH_QUERY, lambda f: set_value(f, 1, S.QUERY, "[" + " ".join(["7"] * 15) + "]")), bad(S.SEARCH_QUERY, S.QUERY, 1, "wrong count")),
    "17 numbers": (mutate(S.PROPERTIES, lambda f: set_value(f, 4, S.NAME, "[" + " ".join(["7"] * 17) + "]")), bad(S.PROPERTIES, S.NAME, 4, "wrong count")),
    "value 256": (mutate(S.SEARCH_QUERY, lambda f: set_value(f, 2, S.QUERY, "[256" + " 1" * 15 + "]")), bad(S.SEARCH_QUERY, S.QUERY, 2, "value > 255")),
    "huge value": (mutate(S.SEARCH_QUERY, lambda f: set_value(f, 2, S.QUERY, "[" + "9" * 30 + " 1" * 15 + "]")), bad(S.SEARCH_QUERY, S.QUERY, 2, "value > 255")),
    "garbage": (mutate(S.SEARCH_QUERY, lambda f: set_value(f, 0, S.QUERY, "[1 2 x" + " 3" * 13 + "]")), bad(S.SEARCH_QUERY, S.QUERY, 0, "unexpected characters")),
    "negative": (mutate(S.SEARCH_QUERY, lambda f: set_value(f, 0, S.QUERY, "[-1" + " 3" * 15 + "]")), bad(S.SEARCH_QUERY, S.QUERY, 0, "unexpected characters")),
    "no brackets": (mutate(S.PROPERTIES, lambda f: set_value(f, 0, S.NAME, "1" + " 3" * 15)), bad(S.PROPERTIES, S.NAME, 0, "unexpected characters")),
    "null sku": (mutate(S.PRODUCT_BUY, lambda f: set_value(f, 5, S.SKU, pd.NA, "Int64")), bad(S.PRODUCT_BUY, S.SKU, 5, "NULL")),
    "null timestamp": (mutate(S.ADD_TO_CART, lambda f: set_value(f, 1, S.TIMESTAMP, None, object)), bad(S.ADD_TO_CART, S.TIMESTAMP, 1, "NULL")),
    "null query": (mutate(S.SEARCH_QUERY, lambda f: set_value(f, 3, S.QUERY, None, object)), bad(S.SEARCH_QUERY, S.QUERY, 3, "NULL")),
    "nan url": (mutate(S.PAGE_VISIT, lambda f: with_float(f, 2, S.URL, np.nan)), bad(S.PAGE_VISIT, S.URL, 2, "NaN")),
    "inf category": (mutate(S.PROPERTIES, lambda f: with_float(f, 6, S.CATEGORY, -np.inf)), bad(S.PROPERTIES, S.CATEGORY, 6, "infinite")),
    "nan as null": (mutate(S.PAGE_VISIT, lambda f: set_value(f, 2, S.URL, np.nan, "float64")), bad(S.PAGE_VISIT, S.URL, 2, "NULL")),
    "fractional id": (mutate(S.PAGE_VISIT, lambda f: set_value(f, 1, S.CLIENT_ID, 104.5, "float64")), bad(S.PAGE_VISIT, S.CLIENT_ID, 1, "whole number")),
    "duplicate sku": (mutate(S.PROPERTIES, lambda f: set_value(f, 7, S.SKU, 2)), bad(S.PROPERTIES, S.SKU, 7, "duplicate sku")),
    "unknown sku": (mutate(S.REMOVE_FROM_CART, lambda f: set_value(f, 1, S.SKU, 77)), bad(S.REMOVE_FROM_CART, S.SKU, 1, "not found in product_properties")),
    "unknown bought sku": (mutate(S.PRODUCT_BUY, lambda f: set_value(f, 9, S.SKU, 78)), bad(S.PRODUCT_BUY, S.SKU, 9, "not found in product_properties")),
    "price 100": (mutate(S.PROPERTIES, lambda f: set_value(f, 3, S.PRICE, 100)), bad(S.PROPERTIES, S.PRICE, 3, "outside 0..99")),
    "price -1": (mutate(S.PROPERTIES, lambda f: set_value(f, 0, S.PRICE, -1)), bad(S.PROPERTIES, S.PRICE, 0, "outside 0..99")),
    "list of 15": (mutate(S.PROPERTIES, lambda f: f.assign(name=[np.arange(15)] * len(f))), bad(S.PROPERTIES, S.NAME, 0, "wrong count")),
    "list value 300": (mutate(S.PROPERTIES, lambda f: f.assign(name=[np.arange(16) * 20] * len(f))), bad(S.PROPERTIES, S.NAME, 0, "outside 0..255")),
    "empty product_buy": (mutate(S.PRODUCT_BUY, lambda f: f.iloc[:0]), ["product_buy.parquet", "no rows"]),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_bad_table_is_rejected_with_a_clear_message(tmp_path, case):
    fn, parts = BAD_TABLES[case]
    with pytest.raises(UbpError) as info:
        ingest_tables(tmp_path, fn(handmade_tables()))
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    assert not (tmp_path / "canonical").exists()  # nothing half-written


def test_unreadable_parquet(tmp_path):
    raw = write_raw(tmp_path / "raw", handmade_tables(), RELEVANT)
    (raw / "page_visit.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UbpError, match=r"page_visit\.parquet: not a readable parquet"):
        ingest(raw, tmp_path / "canonical")


@pytest.mark.parametrize("relevant, problem", [
    (np.array([105, 101, 104, 101], dtype=np.int64), r"duplicate client id 101 at position 3"),
    (RELEVANT.reshape(1, -1), r"1-D"),
    (RELEVANT.astype(np.float64), r"integers"),
    (np.array([], dtype=np.int64), r"no relevant clients"),
])
def test_bad_relevant_clients(tmp_path, relevant, problem):
    with pytest.raises(UbpError, match=r"relevant_clients\.npy: .*" + problem):
        ingest_tables(tmp_path, handmade_tables(), relevant)


def test_missing_relevant_clients(tmp_path):
    raw = write_raw(tmp_path / "raw", handmade_tables(), RELEVANT)
    (raw / S.RELEVANT_CLIENTS_FILE).unlink()
    with pytest.raises(UbpError, match=r"relevant_clients\.npy: file not found"):
        ingest(raw, tmp_path / "canonical")


def test_label_file_without_popularity(tmp_path):
    target = {S.label_file(S.PROPENSITY_SKU): np.array([1, 2], dtype=np.int64)}
    with pytest.raises(UbpError, match=r"propensity_sku\.npy.*popularity_propensity_sku\.npy"):
        ingest_tables(tmp_path, handmade_tables(), target=target)


def test_canonical_types_order_and_vector_styles(tmp_path):
    tables = handmade_tables()
    out = ingest_tables(tmp_path, tables, target={S.ACTIVE_CLIENTS_FILE: np.array([3, 1, 2])})
    for name, frame in tables.items():
        schema = pq.read_schema(out / f"{name}.parquet")
        assert schema.names == list(frame.columns)
        for field in schema:
            expected = {S.TIMESTAMP: "timestamp[us]", S.QUERY: "list<element: uint8>",
                        S.NAME: "list<element: uint8>"}.get(field.name, "int64")
            assert str(field.type) == expected, (name, field)
        got = pd.read_parquet(out / f"{name}.parquet")
        for column in frame.columns:  # same rows, same order, duplicates kept
            if column == S.TIMESTAMP:
                assert (got[column] == pd.to_datetime(frame[column])).all()
            elif column in S.VECTOR_COLUMNS:
                assert [list(v) for v in got[column]] == [
                    [int(x) for x in re.findall(r"\d+", s)] for s in frame[column]]
            else:
                assert got[column].tolist() == frame[column].tolist()
    names = pd.read_parquet(out / f"{S.PROPERTIES}.parquet")
    assert [list(v) for v in names[S.NAME]] == [parsed(sku) for sku in names[S.SKU]]
    relevant = np.load(out / S.RELEVANT_CLIENTS_FILE)
    assert relevant.dtype == np.int64 and relevant.tolist() == RELEVANT.tolist()
    assert (out / "target" / S.ACTIVE_CLIENTS_FILE).read_bytes() == (
        tmp_path / "raw" / "target" / S.ACTIVE_CLIENTS_FILE).read_bytes()


@pytest.mark.parametrize("style", list(VECTOR_STYLES) + ["commas", "list"])
def test_each_vector_style_parses(tmp_path, style):
    tables = handmade_tables()
    values = [parsed(9 * i) for i in range(len(tables[S.SEARCH_QUERY]))]
    if style == "commas":
        column = [str(v) for v in values]  # python's list repr
    elif style == "list":
        column = [np.array(v, dtype=np.int64) for v in values]
    else:
        column = [vector(9 * i, style) for i in range(len(values))]
    tables[S.SEARCH_QUERY] = tables[S.SEARCH_QUERY].assign(query=column)
    out = ingest_tables(tmp_path, tables)
    got = pd.read_parquet(out / f"{S.SEARCH_QUERY}.parquet")[S.QUERY]
    assert [v.tolist() for v in got] == values


def test_datetime_timestamps_and_narrow_ints_accepted(tmp_path):
    tables = handmade_tables()
    frame = tables[S.PAGE_VISIT]
    tables[S.PAGE_VISIT] = frame.assign(timestamp=pd.to_datetime(frame[S.TIMESTAMP]),
                                        url=frame[S.URL].astype("int32"), client_id=frame[S.CLIENT_ID].astype(float))
    out = ingest_tables(tmp_path, tables)
    got = pd.read_parquet(out / f"{S.PAGE_VISIT}.parquet")
    assert got[S.TIMESTAMP].tolist() == pd.to_datetime(frame[S.TIMESTAMP]).tolist()
    assert got[S.URL].dtype == np.int64 and got[S.CLIENT_ID].dtype == np.int64
    assert got[S.CLIENT_ID].tolist() == frame[S.CLIENT_ID].tolist()


@pytest.mark.parametrize("params, match", [
    ({"data": {"raw_dir": "raw", "raw_dri": "raw"}}, r"unknown key 'data\.raw_dri'; did you mean 'raw_dir'"),
    ({"data": {"raw_dir": 5}}, r"data\.raw_dir must be a string, got 5"),
    ({"data": {"raw_dir": "raw"}, "features": {"temp_directroy": "/tmp"}},
     r"unknown key 'features\.temp_directroy'; did you mean 'temp_directory'"),
])
def test_stage_refuses_bad_settings_before_any_work(tmp_path, monkeypatch, params, match):
    """With the raw data there, a typo in `data:` (or in `features:`, whose DuckDB resources it takes)
    stops the stage unwritten."""
    from tests.conftest import refuses_before_any_work
    from ubp.data.ingest import main

    write_raw(tmp_path / "run" / "raw", handmade_tables(), RELEVANT)
    refuses_before_any_work(main, [], params, match, tmp_path / "run", monkeypatch)


# --- object .npy arrays (the official code loads with allow_pickle=True) ---------------------------

class Planted:
    """Unpickling this runs a shell command that creates MARKER: a loader that imports it has lost."""
    marker = None

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_object_int_arrays_are_accepted_as_int64(tmp_path):
    relevant = np.array([105, np.int64(101), 104, np.int32(103), 102], dtype=object)
    active = np.array([3, 1, 2], dtype=object)
    raw = write_raw(tmp_path / "raw", handmade_tables(), RELEVANT)
    np.save(raw / S.RELEVANT_CLIENTS_FILE, relevant, allow_pickle=True)
    (raw / "target").mkdir()
    np.save(raw / "target" / S.ACTIVE_CLIENTS_FILE, active, allow_pickle=True)
    ingest(raw, tmp_path / "canonical")
    got = np.load(tmp_path / "canonical" / S.RELEVANT_CLIENTS_FILE, allow_pickle=False)
    assert got.dtype == np.int64 and got.tolist() == [105, 101, 104, 103, 102]
    got = np.load(tmp_path / "canonical" / "target" / S.ACTIVE_CLIENTS_FILE, allow_pickle=False)
    assert got.dtype == np.int64 and got.tolist() == [3, 1, 2]


@pytest.mark.parametrize("values, shown", [
    ([105, "101", 104], r"element 1 \(0-based\) is '101' \(str\)"),
    ([105, 101, 104.0], r"element 2 \(0-based\) is 104\.0 \(float\)"),
    ([None, 101], r"element 0 \(0-based\) is None \(NoneType\)"),
    ([105, True], r"element 1 \(0-based\) is True \(bool\)"),
    ([105, 2 ** 70], r"element 1 \(0-based\) is 1180591620717411303424, outside the int64 range"),
])
def test_object_array_with_a_non_integer_is_refused(tmp_path, values, shown):
    raw = write_raw(tmp_path / "raw", handmade_tables(), RELEVANT)
    np.save(raw / S.RELEVANT_CLIENTS_FILE, np.array(values, dtype=object), allow_pickle=True)
    with pytest.raises(UbpError, match=r"input/relevant_clients\.npy: " + shown):
        ingest(raw, tmp_path / "canonical")
    assert not (tmp_path / "canonical").exists()


@pytest.mark.parametrize("where", ["relevant", "target"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, monkeypatch, where):
    marker = tmp_path / "MARKER"
    monkeypatch.setattr(Planted, "marker", marker)
    raw = write_raw(tmp_path / "raw", handmade_tables(), RELEVANT)
    path = raw / S.RELEVANT_CLIENTS_FILE
    if where == "target":
        (raw / "target").mkdir()
        path = raw / "target" / S.ACTIVE_CLIENTS_FILE
    np.save(path, np.array([105, Planted()], dtype=object), allow_pickle=True)
    assert b"system" in path.read_bytes()  # the payload really names os.system
    with pytest.raises(UbpError, match=re.escape(str(path)) + r": refusing a pickled object array that names "
                                       r"posix\.system"):
        ingest(raw, tmp_path / "canonical")
    assert not marker.exists()


def test_files_the_layout_does_not_name_are_logged_and_ignored(tmp_path, caplog):
    raw = write_raw(tmp_path / "raw", handmade_tables(), RELEVANT,
                    target={S.ACTIVE_CLIENTS_FILE: np.array([1, 2]), "notes.npy": np.array([1.5])})
    (raw / "README.txt").write_text("hello")
    np.save(raw / "input" / "old_clients.npy", np.array(["x"]))
    with caplog.at_level("WARNING", logger="ubp.ingest"):
        ingest(raw, tmp_path / "canonical")
    lines = [r.getMessage() for r in caplog.records if "not part of the data layout" in r.getMessage()]
    assert sorted(Path(line.split(":")[0]).name for line in lines) == ["README.txt", "notes.npy", "old_clients.npy"]
    assert sorted(p.name for p in (tmp_path / "canonical" / "target").iterdir()) == [S.ACTIVE_CLIENTS_FILE]


# --- implausible timestamps (see ubp.data.timestamps) -----------------------------------------------
# The hand-made log's latest day is 2022-04-01 (AFTER_END), its gaps are at most 7 days after its median: with
# days_after_bulk 30 (the default) the plausible range ends before 2022-05-02 00:00:00 (2022-04-01 + 1 + 30 days).

def plant(tables, name, row, timestamp):
    frame = tables[name]
    value = frame.iloc[[row % len(frame)]].assign(timestamp=timestamp)
    tables[name] = pd.concat([frame.iloc[:row], value, frame.iloc[row:]], ignore_index=True)
    return tables


@pytest.mark.parametrize("name, row, stamp", [
    (S.PRODUCT_BUY, 4, "2099-01-01 00:00:00"),
    (S.PAGE_VISIT, 1, "1970-01-01 00:00:00"),
    (S.PRODUCT_BUY, 0, "2022-05-02 00:00:00"),  # the first implausible second
    (S.SEARCH_QUERY, 2, "1999-12-31 23:59:59"),
])
def test_implausible_timestamp_is_refused_naming_file_column_row_value(tmp_path, name, row, stamp):
    with pytest.raises(UbpError) as info:
        ingest_tables(tmp_path, plant(handmade_tables(), name, row, stamp))
    message = str(info.value)
    for part in bad(name, S.TIMESTAMP, row, "implausible timestamp") + [f"(value '{stamp}')", "1 such row(s)"]:
        assert part in message, f"{part!r} not in {message!r}"
    assert not (tmp_path / "canonical").exists()  # so the split never sees it: no moved end date


def test_last_plausible_second_is_accepted(tmp_path):
    out = ingest_tables(tmp_path, plant(handmade_tables(), S.PRODUCT_BUY, 0, "2022-05-01 23:59:59"))
    assert len(pd.read_parquet(out / f"{S.PRODUCT_BUY}.parquet")) == len(handmade_tables()[S.PRODUCT_BUY]) + 1
    assert not (out / "dropped.json").exists()  # refusing (the default) writes no report


def test_drop_removes_exactly_the_planted_rows_and_reports_them(tmp_path):
    import json

    from ubp.data.split import split
    from ubp.data.timestamps import TimestampsConfig

    tables = plant(plant(handmade_tables(), S.PRODUCT_BUY, 3, "2099-06-01 10:00:00"), S.PAGE_VISIT, 0, "1970-01-01 00:00:00")
    tables = plant(tables, S.PRODUCT_BUY, 7, "2099-06-02 10:00:00")
    raw = write_raw(tmp_path / "raw", tables, RELEVANT)
    ingest(raw, tmp_path / "canonical", timestamps=TimestampsConfig(drop=True))
    for name, frame in handmade_tables().items():
        got = pd.read_parquet(tmp_path / "canonical" / f"{name}.parquet")
        assert got[got.columns[0]].tolist() == frame[frame.columns[0]].tolist(), name
        if S.TIMESTAMP in frame:
            assert got[S.TIMESTAMP].tolist() == pd.to_datetime(frame[S.TIMESTAMP]).tolist(), name
    report = json.loads((tmp_path / "canonical" / "dropped.json").read_text())
    assert report["dropped_rows"] == {S.PRODUCT_BUY: 2, S.ADD_TO_CART: 0, S.REMOVE_FROM_CART: 0,
                                      S.PAGE_VISIT: 1, S.SEARCH_QUERY: 0}
    assert report["plausible_before"] == "2022-05-02 00:00:00"
    assert split(tmp_path / "canonical", tmp_path / "split")["end_date"] == END_DATE


@pytest.mark.parametrize("timestamps, match", [
    ({"dorp": True}, r"unknown key 'data\.timestamps\.dorp'"),
    ({"drop": "yes"}, r"data\.timestamps\.drop must be true or false"),
    ({"earliest": "2000-01-01"}, r"data\.timestamps\.earliest must be 'YYYY-MM-DD HH:MM:SS'"),
    ({"days_after_bulk": 0}, r"data\.timestamps\.days_after_bulk must be >= 1"),
])
def test_timestamps_settings_are_checked(timestamps, match):
    from ubp.data.synthetic import DataConfig

    with pytest.raises(UbpError, match=match):
        DataConfig.from_params({"data": {"timestamps": timestamps}})
