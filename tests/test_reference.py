"""The task-specific LightGBM reference on a hand-made targets dir and feature table."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ubp import reference, schema
from ubp.io import UbpError

N_CLIENTS = 600
N_FEATURES = 4
N_LABELS = 3
FAST = {"n_estimators": 30, "early_stopping_rounds": 5, "fallback_rounds": 10, "min_child_samples": 10}
FIXED = {"n_estimators": 20, "early_stopping_rounds": 0, "min_child_samples": 10}  # the default mode, fewer rounds


def make_data(root, signal: bool = True, seed: int = 0):
    """features.parquet + labels/<task>.npz. With `signal`, every label is a feature threshold
    (label j of a task: feature j % 4 in its top 25%, both windows, 5% of labels flipped);
    without, labels are coin flips independent of the features."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1000, 1000 + N_CLIENTS)).astype(np.int64)
    x = rng.normal(size=(N_CLIENTS, N_FEATURES)).astype(np.float32)
    table = pd.DataFrame({schema.CLIENT_ID: ids, **{f"f{i}": x[:, i] for i in range(N_FEATURES)}})
    features_path = root / "features" / "features.parquet"
    features_path.parent.mkdir(parents=True)
    table.to_parquet(features_path)
    by_id = dict(zip(ids.tolist(), range(N_CLIENTS)))

    labels_dir = root / "targets" / "labels"
    labels_dir.mkdir(parents=True)
    for task in schema.TASKS:
        task_ids = np.sort(ids) if task != schema.CHURN else rng.permutation(ids)[: N_CLIENTS * 2 // 3]
        rows = np.array([by_id[i] for i in task_ids.tolist()])
        n_labels = 1 if task in schema.BINARY_TASKS else N_LABELS
        windows = []
        for _ in range(2):
            if signal:
                cols = [x[rows, j % N_FEATURES] > np.quantile(x[:, j % N_FEATURES], 0.75) for j in range(n_labels)]
                y = np.stack(cols, axis=1) ^ (rng.random((len(rows), n_labels)) < 0.05)
            else:
                y = rng.random((len(rows), n_labels)) < 0.3
            windows.append(y.astype(np.uint8))
        arrays = {"client_ids": task_ids, "y_train": windows[0], "y_validation": windows[1]}
        if task not in schema.BINARY_TASKS:
            arrays["popularity"] = np.arange(n_labels, 0, -1).astype(np.int64) * 10
        np.savez(labels_dir / f"{task}.npz", **arrays)
    return features_path, root / "targets"


def run_on(tmp_path, signal=True, seed=0, cfg=FAST, tag="run"):
    base = tmp_path / tag
    base.mkdir()
    features_path, targets_dir = make_data(base, signal, seed)
    return reference.run({"reference": cfg}, features_path, targets_dir, base / "metrics"), base


@pytest.mark.parametrize("cfg", [FAST, FIXED], ids=["early-stopping", "fixed-rounds"])
def test_planted_signal_scores_high_and_noise_about_half(tmp_path, cfg):
    good, _ = run_on(tmp_path, signal=True, cfg=cfg, tag="signal")
    noise, _ = run_on(tmp_path, signal=False, cfg=cfg, tag="noise")
    for task in schema.TASKS:
        assert good["tasks"][task]["auroc"] > 0.85, (task, good["tasks"][task])
        assert abs(noise["tasks"][task]["auroc"] - 0.5) < 0.1, (task, noise["tasks"][task])


def test_metrics_json_layout(tmp_path):
    result, base = run_on(tmp_path)
    written = json.loads((base / "metrics" / "lightgbm.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert written["profile"] == "lightgbm" and written["kind"] == "reference"
    assert written["eval_profile"] == "lightgbm (task-specific, not a profile)"
    assert list(written["tasks"]) == list(schema.TASKS)
    assert written["sum"] == round(sum(t["score"] for t in written["tasks"].values()), 4)
    for task, entry in written["tasks"].items():
        keys = {"score", "auroc", "best_epoch", "n_clients", "n_labels", "labels_without_positive", "seconds"}
        if task not in schema.BINARY_TASKS:
            keys |= {"diversity", "novelty"}
        assert keys <= set(entry)
        assert entry["best_epoch"] == 0
        assert entry["n_labels"] == (1 if task in schema.BINARY_TASKS else N_LABELS)
        assert entry["n_clients"] == (N_CLIENTS * 2 // 3 if task == schema.CHURN else N_CLIENTS)
        if task not in schema.BINARY_TASKS:
            expected = 0.8 * entry["auroc"] + 0.1 * entry["diversity"] + 0.1 * entry["novelty"]
            assert entry["score"] == pytest.approx(expected, abs=1e-4)


def test_never_trains_on_validation_labels(tmp_path, monkeypatch):
    """Shuffling (or flipping) every y_validation leaves the predictions bit-identical."""
    seen = []
    real = reference.compute_metrics
    monkeypatch.setattr(reference, "compute_metrics",
                        lambda task, logits, *a, **k: seen.append(np.array(logits)) or real(task, logits, *a, **k))
    _, base = run_on(tmp_path, tag="a")
    first = list(seen)
    seen.clear()
    for path in (base / "targets" / "labels").glob("*.npz"):
        with np.load(path) as npz:
            arrays = dict(npz)
        arrays["y_validation"] = 1 - np.random.default_rng(1).permutation(arrays["y_validation"])
        np.savez(path, **arrays)
    reference.run({"reference": FAST}, base / "features" / "features.parquet", base / "targets", base / "metrics")
    assert len(first) == len(seen) == len(schema.TASKS)
    for a, b in zip(first, seen):
        np.testing.assert_array_equal(a, b)


def test_deterministic(tmp_path):
    a, _ = run_on(tmp_path, tag="a")
    b, _ = run_on(tmp_path, tag="b")
    strip = lambda r: {t: {k: v for k, v in e.items() if k != "seconds"} for t, e in r["tasks"].items()}
    assert strip(a) == strip(b) and a["sum"] == b["sum"]


def test_constant_labels_and_rare_labels():
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    y = np.zeros((50, 3), dtype=np.uint8)
    y[:10, 1] = 1
    y[:3, 2] = 1  # too few positives to hold some out: fallback_rounds rounds
    logits, rounds = reference.task_logits(x, y, reference.config_from(FAST))
    assert rounds[0] == 0 and rounds[1] > 0 and rounds[2] == FAST["fallback_rounds"]
    assert np.all(logits[:, 0] == logits[0, 0]) and logits[0, 0] < -4
    assert logits[:10, 1].mean() > logits[10:, 1].mean()


def test_config_rejects_unknown_keys():
    with pytest.raises(UbpError, match="n_trees"):
        reference.config_from({"n_trees": 10})


def test_shared_binning_gives_each_label_its_own_model():
    """Without early stopping the task's labels share one binned Dataset: each label's margins must
    equal those of a model fitted on a Dataset of its own (and differ between labels)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    y = np.stack([x[:, j] + rng.normal(0, 0.5, 400) > 0.7 for j in range(3)], axis=1).astype(np.uint8)
    cfg = reference.config_from(FIXED)
    shared, _ = reference.task_logits(x, y, cfg, seed=2)
    for j in range(3):
        own, _ = reference.fit_label(x, y[:, j], cfg, seed=2 * 1_000 + j)
        np.testing.assert_allclose(shared[:, j], own, atol=1e-5)
    assert np.corrcoef(shared[:, 0], x[:, 0])[0, 1] > 0.5 and np.corrcoef(shared[:, 1], x[:, 1])[0, 1] > 0.5
