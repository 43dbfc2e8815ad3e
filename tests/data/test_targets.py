"""Targets: label sets and label matrices of the six tasks on the hand-made log, computed by hand.

Train-window purchases (all clients): sku 2 x3, 1 x2, 8 x2, 3/4/5/6 x1 -> categories 10:5, 20:2,
30:2, 40:2; prices 1:2, 5:3, 7:4, 9:2. Validation: skus 7 x3, 3, 4, 9. Skus seen before the
window (buy/cart/remove): 1, 2, 5, 6, 8 -> new-sku candidates 7:3, 3:2, 4:2, 9:1.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import refuses_before_any_work
from tests.data.conftest import RELEVANT, handmade_tables, write_raw
from ubp import schema as S
from ubp.data.ingest import ingest
from ubp.data.split import split
from ubp.data.targets import TargetsConfig, build_targets, main
from ubp.io import UbpError

N_LABELS = 3
# relevant clients, in file order: 105, 101, 104, 103, 102
EXPECTED = {
    S.CHURN: dict(client_ids=[105, 101, 103], y_train=[[1], [0], [0]], y_validation=[[1], [1], [0]]),
    S.CONVERSION: dict(client_ids=RELEVANT.tolist(), y_train=[[1], [0], [1], [0], [0]],
                       y_validation=[[1], [1], [1], [0], [0]]),
    S.PROPENSITY_CATEGORY: dict(
        label_ids=[10, 20, 30], popularity=[5, 2, 2],  # 40 also has 2: cut by id
        y_train=[[0, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0], [1, 0, 0]],
        y_validation=[[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]]),
    S.PROPENSITY_SKU: dict(
        label_ids=[2, 1, 8], popularity=[3, 2, 2],
        y_train=[[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0]],
        y_validation=[[0, 0, 0]] * 5),
    S.PROPENSITY_NEW_SKU: dict(
        label_ids=[7, 3, 4], popularity=[3, 2, 2],
        y_train=[[0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
        y_validation=[[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0]]),
    S.PROPENSITY_PRICE: dict(
        label_ids=[1, 5, 7, 9], popularity=[2, 3, 4, 2],
        y_train=[[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]],
        y_validation=[[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]]),
}


@pytest.fixture
def computed(tmp_path, handmade_split):
    out = tmp_path / "targets"
    build_targets(handmade_split["canonical"], handmade_split["split"], out, TargetsConfig(n_labels=N_LABELS))
    return out


@pytest.mark.parametrize("task", S.TASKS)
def test_label_matrices(computed, task):
    got = np.load(computed / "labels" / f"{task}.npz")
    expected = EXPECTED[task]
    assert got["client_ids"].dtype == np.int64
    assert got["client_ids"].tolist() == expected.get("client_ids", RELEVANT.tolist())
    for key in ("y_train", "y_validation"):
        assert got[key].dtype == np.uint8
        assert got[key].tolist() == expected[key], key
    if task in S.PROPENSITY_TASKS:
        for key in ("label_ids", "popularity"):
            assert got[key].dtype == np.int64 and got[key].tolist() == expected[key], key
            name = S.label_file(task) if key == "label_ids" else S.popularity_file(task)
            assert np.load(computed / name).tolist() == expected[key]
    else:
        assert "label_ids" not in got


def test_active_clients_and_summary(computed):
    # 101 is active only through its purchase at train_target_start - 1 s; 102's first is at the start
    assert np.load(computed / S.ACTIVE_CLIENTS_FILE).tolist() == [105, 101, 103]
    summary = json.loads((computed / "summary.json").read_text())
    assert summary[S.PROPENSITY_SKU]["positives_train"] == 2
    assert summary[S.PROPENSITY_SKU]["labels_without_positive_train"] == 1
    assert summary[S.PROPENSITY_SKU]["labels_without_positive_validation"] == 3
    assert summary[S.CHURN]["n_clients"] == 3 and summary[S.CONVERSION]["positives_validation"] == 3
    assert summary[S.PROPENSITY_PRICE]["n_labels"] == 4
    assert set(summary["sources"].values()) == {"computed"}


def test_provided_target_files_are_used_as_is(tmp_path):
    target = {
        S.label_file(S.PROPENSITY_CATEGORY): np.array([40, 10], dtype=np.int64),
        S.popularity_file(S.PROPENSITY_CATEGORY): np.array([8, 9], dtype=np.int64),
        S.ACTIVE_CLIENTS_FILE: np.array([102, 104, 999], dtype=np.int64),  # order and extras irrelevant
    }
    raw = write_raw(tmp_path / "raw", handmade_tables(), RELEVANT, target)
    ingest(raw, tmp_path / "canonical")
    split(tmp_path / "canonical", tmp_path / "split")
    build_targets(tmp_path / "canonical", tmp_path / "split", tmp_path / "targets", TargetsConfig(n_labels=N_LABELS))
    out = tmp_path / "targets"
    category = np.load(out / "labels" / f"{S.PROPENSITY_CATEGORY}.npz")
    assert category["label_ids"].tolist() == [40, 10] and category["popularity"].tolist() == [8, 9]
    # clients 105, 101, 104, 103, 102: 103 bought cat 10 (train) and 20 (validation); 102 cat 10 then 40
    assert category["y_train"].tolist() == [[0, 0], [0, 0], [0, 0], [0, 1], [0, 1]]
    assert category["y_validation"].tolist() == [[0, 0], [0, 0], [0, 0], [0, 0], [1, 0]]
    churn = np.load(out / "labels" / f"{S.CHURN}.npz")
    assert churn["client_ids"].tolist() == [104, 102]  # relevant_clients order
    assert churn["y_train"].tolist() == [[1], [0]] and churn["y_validation"].tolist() == [[1], [0]]
    assert np.load(out / S.ACTIVE_CLIENTS_FILE).tolist() == [102, 104, 999]
    sku = np.load(out / "labels" / f"{S.PROPENSITY_SKU}.npz")  # not provided: computed
    assert sku["label_ids"].tolist() == EXPECTED[S.PROPENSITY_SKU]["label_ids"]
    sources = json.loads((out / "summary.json").read_text())["sources"]
    assert sources[S.label_file(S.PROPENSITY_CATEGORY)] == "read" and sources[S.ACTIVE_CLIENTS_FILE] == "read"
    assert sources[S.label_file(S.PROPENSITY_SKU)] == "computed"


def test_targets_need_split(tmp_path, handmade_split):
    with pytest.raises(UbpError, match="run `python -m ubp split` first"):
        build_targets(handmade_split["canonical"], tmp_path / "no-split", tmp_path / "targets")


@pytest.mark.parametrize("params, match", [
    ({"targets": {"n_label": 5}}, r"unknown key 'targets\.n_label'; did you mean 'n_labels'"),
    ({"targets": {"n_labels": "100"}}, r"targets\.n_labels must be an integer, got '100'"),
    ({"features": {"memory_limt": "1GB"}}, r"unknown key 'features\.memory_limt'; did you mean 'memory_limit'"),
])
def test_stage_refuses_bad_settings_before_any_work(tmp_path, handmade_split, monkeypatch, params, match):
    """With the split there, a typo or a wrong type in `targets:` (or in `features:`, whose DuckDB
    resources it takes) still stops the stage unwritten."""
    argv = ["--canonical-dir", str(handmade_split["canonical"]), "--split-dir", str(handmade_split["split"]),
            "--out-dir", str(tmp_path / "run" / "targets")]
    refuses_before_any_work(main, argv, params, match, tmp_path / "run", monkeypatch)
