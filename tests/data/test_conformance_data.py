"""Conformance: ingest -> split -> targets on ../shared/conformance/raw reproduce the official outputs
exactly (expected/split.json, expected/targets/*.npz), and our label-set definitions reproduce the
shipped target/ files."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from ubp import schema as S
from ubp.data.ingest import ingest
from ubp.data.split import split
from ubp.data.targets import build_targets

from tests.conftest import CONFORMANCE

SUMMED = (S.SKU, S.URL, S.CATEGORY, S.PRICE)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, conformance) -> dict[str, Path]:
    """Every test here goes through this fixture: a missing suite fails in CI, skips elsewhere."""
    root = tmp_path_factory.mktemp("conformance")
    dirs = {name: root / name for name in ("canonical", "split", "targets")}
    ingest(CONFORMANCE / "raw", dirs["canonical"])
    split(dirs["canonical"], dirs["split"])
    build_targets(dirs["canonical"], dirs["split"], dirs["targets"])
    return dirs


def part_stats(path: Path) -> dict:
    """The statistics expected/split.json records for one output part, computed with DuckDB."""
    con = duckdb.connect()
    source = f"read_parquet('{path}')"
    columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    stats = dict(zip(
        ("rows", "n_clients", "client_id_sum", "timestamp_min", "timestamp_max", "timestamp_seconds_sum"),
        con.execute(f"SELECT count(*), count(DISTINCT client_id), sum(client_id)::HUGEINT, "
                    f"strftime(min(timestamp), '%Y-%m-%d %H:%M:%S'), strftime(max(timestamp), '%Y-%m-%d %H:%M:%S'), "
                    f"sum(epoch(timestamp)::BIGINT)::HUGEINT FROM {source}").fetchone()))
    stats["columns"] = columns
    for column in columns:
        if column in SUMMED:
            stats[f"{column}_sum"] = con.execute(f"SELECT sum({column})::HUGEINT FROM {source}").fetchone()[0]
        elif column in S.VECTOR_COLUMNS:
            stats[f"{column}_parsed_int_sum"] = con.execute(
                f"SELECT sum(list_sum({column}))::HUGEINT FROM {source}").fetchone()[0]
    return {k: int(v) if isinstance(v, int) else v for k, v in stats.items()}


def test_split_matches_official(dirs):
    expected = json.loads((CONFORMANCE / "expected" / "split.json").read_text())
    ours = json.loads((dirs["split"] / S.SPLIT_FILE).read_text())
    for key in ("end_date", "train_target_start", "validation_target_start", "days_in_target"):
        assert ours[key] == expected[key], key
    parts = {**{e: dirs["split"] / "input" / f"{e}.parquet" for e in S.EVENT_TYPES},
             S.TRAIN_TARGET: dirs["split"] / f"{S.TRAIN_TARGET}.parquet",
             S.VALIDATION_TARGET: dirs["split"] / f"{S.VALIDATION_TARGET}.parquet"}
    for name, path in parts.items():
        want = expected["input"][name] if name in S.EVENT_TYPES else expected[name]
        got = part_stats(path)
        for key, value in want.items():
            if key != "dtypes":  # pandas dtypes of the official frames; ours are typed parquet
                assert got[key] == value, (name, key)
        rows = ours["rows"]["input"][name] if name in S.EVENT_TYPES else ours["rows"][name]
        assert rows == want["rows"]
    for event, want in expected["raw"].items():
        assert part_stats(dirs["canonical"] / f"{event}.parquet")["rows"] == want["rows"]


def test_canonical_keeps_raw_order(dirs):
    for event in (S.PRODUCT_BUY, S.SEARCH_QUERY):
        raw = pd.read_parquet(CONFORMANCE / "raw" / f"{event}.parquet")
        got = pd.read_parquet(dirs["canonical"] / f"{event}.parquet")
        assert got[S.CLIENT_ID].tolist() == raw[S.CLIENT_ID].tolist()
        assert got[S.TIMESTAMP].dt.strftime(S.TIMESTAMP_FORMAT).tolist() == raw[S.TIMESTAMP].tolist()
    raw = pd.read_parquet(CONFORMANCE / "raw" / f"{S.SEARCH_QUERY}.parquet")[S.QUERY]
    got = pd.read_parquet(dirs["canonical"] / f"{S.SEARCH_QUERY}.parquet")[S.QUERY]
    assert all(list(g) == [int(x) for x in re.findall(r"\d+", r)] for g, r in zip(got, raw))


@pytest.mark.parametrize("task", S.TASKS)
def test_targets_match_official(dirs, task):
    expected = np.load(CONFORMANCE / "expected" / "targets" / f"{task}.npz")
    ours = np.load(dirs["targets"] / "labels" / f"{task}.npz")
    want_ids, our_ids = expected["client_ids"], ours["client_ids"]
    assert our_ids.size == want_ids.size and np.array_equal(np.sort(our_ids), np.sort(want_ids))
    order = np.argsort(our_ids)[np.searchsorted(np.sort(our_ids), want_ids)]  # our row of each expected id
    assert np.array_equal(our_ids[order], want_ids)
    for key in ("y_train", "y_validation"):
        assert ours[key].dtype == expected[key].dtype
        assert np.array_equal(ours[key][order], expected[key]), key
    if task in S.PROPENSITY_TASKS:
        for key in ("label_ids", "popularity"):
            assert np.array_equal(ours[key], expected[key]), key


def test_summary_matches_official(dirs):
    expected = json.loads((CONFORMANCE / "expected" / "targets" / "summary.json").read_text())
    ours = json.loads((dirs["targets"] / "summary.json").read_text())
    for task, want in expected.items():
        for key, value in want.items():
            assert ours[task][key] == value, (task, key)


def test_our_definitions_reproduce_the_shipped_target_files(dirs, tmp_path):
    canonical = tmp_path / "canonical"
    shutil.copytree(dirs["canonical"], canonical, ignore=shutil.ignore_patterns("target"))
    build_targets(canonical, dirs["split"], tmp_path / "targets")
    shipped = CONFORMANCE / "raw" / "target"
    for task in S.PROPENSITY_TASKS:
        for name in (S.label_file(task), S.popularity_file(task)):
            ours, want = np.load(tmp_path / "targets" / name), np.load(shipped / name)
            assert ours.dtype == want.dtype and np.array_equal(ours, want), name
    active = np.load(tmp_path / "targets" / S.ACTIVE_CLIENTS_FILE)
    want = np.load(shipped / S.ACTIVE_CLIENTS_FILE)  # the shipped file's order is irrelevant
    assert active.size == want.size and np.array_equal(np.sort(active), np.sort(want))
    sources = json.loads((tmp_path / "targets" / "summary.json").read_text())["sources"]
    assert set(sources.values()) == {"computed"}
    for task in S.TASKS:  # and hence the same label matrices
        a = np.load(tmp_path / "targets" / "labels" / f"{task}.npz")
        b = np.load(dirs["targets"] / "labels" / f"{task}.npz")
        for key in ("client_ids", "y_train", "y_validation"):
            assert np.array_equal(a[key], b[key]), (task, key)
