"""The task-specific LightGBM reference on a hand-made targets dir and feature table."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ubp import reference, schema
from ubp.io import UbpError
from tests.conftest import refuses_before_any_work

N_CLIENTS = 600
N_FEATURES = 4
N_LABELS = 3
FAST = reference.ReferenceConfig(n_estimators=30, early_stopping_rounds=5, fallback_rounds=10, min_child_samples=10)
# the default mode (no early stopping), fewer rounds
FIXED = reference.ReferenceConfig(n_estimators=20, early_stopping_rounds=0, min_child_samples=10)


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
    return reference.run(cfg, features_path, targets_dir, base / "metrics"), base


@pytest.mark.parametrize("cfg", [FAST, FIXED], ids=["early-stopping", "fixed-rounds"])
def test_planted_signal_scores_high_and_noise_about_half(tmp_path, cfg):
    good, _ = run_on(tmp_path, signal=True, cfg=cfg, tag="signal")
    noise, _ = run_on(tmp_path, signal=False, cfg=cfg, tag="noise")
    for task in schema.TASKS:
        assert good["tasks"][task]["auroc"] > 0.85, (task, good["tasks"][task])
        assert abs(noise["tasks"][task]["auroc"] - 0.5) < 0.1, (task, noise["tasks"][task])


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def expected_task(logits: np.ndarray, y_val: np.ndarray, popularity) -> dict:
    """The task's metrics by a route of its own (SPEC §5): sklearn's AUROC per label column, macro mean;
    diversity = mean entropy (bits) of the L1-normalised sigmoids / log2 L; novelty = (1 - mean over
    clients of the top-k sigmoids x popularity / sum of the k largest popularities) ** 100, k = min(10, L)."""
    auroc = float(np.mean([roc_auc_score(y_val[:, j], logits[:, j]) for j in range(y_val.shape[1])]))
    if popularity is None:
        return {"auroc": auroc, "score": auroc}
    p = sigmoid(logits.astype(np.float64))
    q = p / p.sum(axis=1, keepdims=True)
    diversity = float(np.mean(-(q * np.log2(q)).sum(axis=1)) / np.log2(p.shape[1]))
    k = min(10, p.shape[1])
    weights = np.asarray(popularity, np.float64) / np.sort(popularity)[::-1][:k].sum()
    top = np.argsort(-p, axis=1)[:, :k]
    novelty = float((1 - np.mean((np.take_along_axis(p, top, 1) * weights[top]).sum(axis=1))) ** 100)
    return {"auroc": auroc, "diversity": diversity, "novelty": novelty,
            "score": 0.8 * auroc + 0.1 * diversity + 0.1 * novelty}


def test_scores_each_tasks_clients_on_their_validation_labels(tmp_path, monkeypatch):
    """With the models replaced by known margins (label j: feature j % 4 of the client), the written
    metrics must be those of each task's clients, looked up by id in the feature table, scored against
    their validation labels, computed here without the stage's code; the sum adds the six."""
    features_path, targets_dir = make_data(tmp_path)
    fed = {}

    def known_margins(x, y_train, cfg, seed=0):
        fed[len(fed)] = (x.copy(), np.asarray(y_train).copy())
        return np.stack([x[:, j % N_FEATURES] for j in range(y_train.shape[1])], axis=1), [1] * y_train.shape[1]

    monkeypatch.setattr(reference, "task_logits", known_margins)
    reference.run(FIXED, features_path, targets_dir, tmp_path / "metrics")
    written = json.loads((tmp_path / "metrics" / "lightgbm.json").read_text())
    table = pd.read_parquet(features_path).set_index(schema.CLIENT_ID)
    want_sum = 0.0
    for t_index, task in enumerate(schema.TASKS):
        with np.load(targets_dir / "labels" / f"{task}.npz") as npz:
            labels = dict(npz)
        x = table.loc[labels["client_ids"], [f"f{i}" for i in range(N_FEATURES)]].to_numpy(np.float32)
        np.testing.assert_array_equal(fed[t_index][0], x)  # the task's clients, by id, in the label file's order
        np.testing.assert_array_equal(fed[t_index][1], labels["y_train"])  # trained on the train window only
        margins = x[:, [j % N_FEATURES for j in range(labels["y_validation"].shape[1])]]
        want = expected_task(margins, labels["y_validation"], labels.get("popularity"))
        entry = written["tasks"][task]
        for key, value in want.items():
            assert entry[key] == pytest.approx(value, abs=1e-4 if key == "score" else 2e-5), (task, key)
        want_sum += round(want["score"], 4)
    assert written["sum"] == pytest.approx(want_sum, abs=1e-4)


def test_perfectly_separable_labels_score_one(tmp_path):
    """Every label a threshold of one discrete feature (label j: feature j % 4 >= 2, both windows, no
    noise): each label's own model ranks every validation buyer first, AUROC exactly 1."""
    features_path, targets_dir = make_data(tmp_path)
    table = pd.read_parquet(features_path)
    codes = np.random.default_rng(3).integers(0, 4, size=(len(table), N_FEATURES))
    for i in range(N_FEATURES):
        table[f"f{i}"] = codes[:, i].astype(np.float32)
    table.to_parquet(features_path)
    code = dict(zip(table[schema.CLIENT_ID].tolist(), codes))
    for path in (targets_dir / "labels").glob("*.npz"):
        with np.load(path) as npz:
            arrays = dict(npz)
        c = np.stack([code[i] for i in arrays["client_ids"].tolist()])
        y = np.stack([c[:, j % N_FEATURES] >= 2 for j in range(arrays["y_train"].shape[1])], axis=1).astype(np.uint8)
        np.savez(path, **{**arrays, "y_train": y, "y_validation": y})
    result = reference.run(FIXED, features_path, targets_dir, tmp_path / "metrics")
    for task in schema.TASKS:
        assert result["tasks"][task]["auroc"] == 1.0, task
    assert result["tasks"][schema.CHURN]["score"] == result["tasks"][schema.CONVERSION]["score"] == 1.0


def test_metrics_json_layout(tmp_path):
    _, base = run_on(tmp_path)
    written = json.loads((base / "metrics" / "lightgbm.json").read_text())
    assert written["profile"] == "lightgbm" and written["kind"] == "reference"
    assert written["eval_profile"] == "lightgbm (task-specific, not a profile)"
    assert list(written["tasks"]) == list(schema.TASKS)
    for task, entry in written["tasks"].items():
        keys = {"score", "auroc", "best_epoch", "n_clients", "n_labels", "labels_without_positive", "seconds"}
        if task not in schema.BINARY_TASKS:
            keys |= {"diversity", "novelty"}
        assert keys <= set(entry)
        assert entry["best_epoch"] == 0
        assert entry["n_labels"] == (1 if task in schema.BINARY_TASKS else N_LABELS)
        assert entry["n_clients"] == (N_CLIENTS * 2 // 3 if task == schema.CHURN else N_CLIENTS)


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
    reference.run(FAST, base / "features" / "features.parquet", base / "targets", base / "metrics")
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
    logits, rounds = reference.task_logits(x, y, FAST)
    assert rounds[0] == 0 and rounds[1] > 0 and rounds[2] == FAST.fallback_rounds
    assert np.all(logits[:, 0] == logits[0, 0]) and logits[0, 0] < -4
    assert logits[:10, 1].mean() > logits[10:, 1].mean()


def test_config_rejects_unknown_keys():
    with pytest.raises(UbpError, match=r"unknown key 'reference\.n_estimator'; did you mean 'n_estimators'"):
        reference.ReferenceConfig.from_params({"reference": {"n_estimator": 10}})


def test_shared_binning_gives_each_label_its_own_model():
    """Without early stopping the task's labels share one binned Dataset: each label's margins must
    equal those of a model fitted on a Dataset of its own (and differ between labels)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    y = np.stack([x[:, j] + rng.normal(0, 0.5, 400) > 0.7 for j in range(3)], axis=1).astype(np.uint8)
    cfg = FIXED
    shared, _ = reference.task_logits(x, y, cfg, seed=2)
    for j in range(3):
        own, _ = reference.fit_label(x, y[:, j], cfg, seed=2 * 1_000 + j)
        np.testing.assert_allclose(shared[:, j], own, atol=1e-5)
    assert np.corrcoef(shared[:, 0], x[:, 0])[0, 1] > 0.5 and np.corrcoef(shared[:, 1], x[:, 1])[0, 1] > 0.5


@pytest.mark.parametrize("settings, match", [
    ({"num_leaf": 7}, r"unknown key 'reference\.num_leaf'; did you mean 'num_leaves'"),
    ({"seed": True}, r"reference\.seed must be an integer, got True"),
    ({"holdout_fraction": 1.5}, r"reference\.holdout_fraction must lie strictly between 0 and 1"),
])
def test_stage_refuses_bad_settings_before_any_work(tmp_path, monkeypatch, settings, match):
    refuses_before_any_work(reference.main, [], {"reference": settings}, match, tmp_path, monkeypatch)
