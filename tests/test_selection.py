"""Ensemble selection: the greedy search on a hand-made objective, and the whole selection on a tiny
hand-made problem where one source carries the labels and the other is noise; y_validation unread."""
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ubp import schema
from ubp.embed import write_profile
from ubp.io import UbpError
from ubp.selection import greedy, load_train_labels, markdown, select

N, N_LABELS = 320, 6
EVAL = {"profile": "tiny", "sizes": {"tiny": {"thin": 16, "wide": 32}}, "seed": 0, "epochs": 3,
        "batch_size": 64, "lr": 0.01, "threads": 1, "device": "cpu"}


def test_greedy_adds_while_it_gains_then_prunes_what_became_redundant():
    # forward: b, then a (2.5 > 2.1), then c (2.6); a + c, never tried going forward, beats all three
    table = {("a",): 1.0, ("b",): 2.0, ("c",): 0.5, ("a", "b"): 2.5, ("b", "c"): 2.1, ("a", "c"): 2.7,
             ("a", "b", "c"): 2.6}
    calls = []

    def objective(names):
        calls.append(names)
        return table[names]

    chosen, steps = greedy(["a", "b", "c"], objective)
    assert chosen == ("a", "c")
    assert [(s["phase"], s["pick"], s["accepted"]) for s in steps] == [
        ("forward", "b", True), ("forward", "a", True), ("forward", "c", True),
        ("backward", "b", True), ("backward", "c", False)]
    assert len(calls) == len(set(calls)), "a set was scored twice"
    assert greedy(["a", "b", "c"], table.__getitem__, min_gain=0.2)[0] == ("a", "b")  # c gains only 0.1
    assert greedy(["a", "b", "c"], table.__getitem__, max_sources=1)[0] == ("b",)


def task_labels(z: np.ndarray, rng) -> dict[str, dict]:
    """Every task's train-window labels are thresholds of the signal z (so z predicts them)."""
    ids = np.arange(1000, 1000 + N, dtype=np.int64)
    out = {}
    for i, task in enumerate(schema.TASKS):
        if task in schema.BINARY_TASKS:
            rows = np.arange(N) if task == schema.CONVERSION else np.arange(0, N, 2)  # churn: "active" half
            y = (z[rows, i % 4] > 0).astype(np.uint8)[:, None]
            out[task] = {"client_ids": ids[rows], "y_train": y}
        else:
            logits = z[:, [(i + j) % 4 for j in range(N_LABELS)]] + 0.3 * rng.standard_normal((N, N_LABELS))
            y = (logits > 0.8).astype(np.uint8)
            out[task] = {"client_ids": ids, "y_train": y, "popularity": y.sum(0).astype(np.int64),
                         "label_ids": np.arange(N_LABELS, dtype=np.int64)}
    return out


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """targets/labels/<task>.npz (y_validation = the train labels flipped: a selection that read them
    would choose differently) and embeddings/{signal,noise}."""
    root = tmp_path_factory.mktemp("selection")
    rng = np.random.default_rng(0)
    z = rng.standard_normal((N, 4))
    labels = task_labels(z, rng)
    (root / "targets" / schema.LABELS_SUBDIR).mkdir(parents=True)
    for task, lab in labels.items():
        np.savez(root / "targets" / schema.LABELS_SUBDIR / f"{task}.npz", y_validation=1 - lab["y_train"], **lab)
    ids = labels[schema.CONVERSION]["client_ids"]
    write_profile(root / "embeddings" / "noise", ids, rng.standard_normal((N, 8)).astype(np.float16), {})
    write_profile(root / "embeddings" / "signal", ids[::-1], z[::-1].astype(np.float16), {})  # any row order
    params = {"eval": EVAL, "models": {"signal": {"method": "svd"}, "noise": {"method": "rcae"}},
              "ensemble": {"max_dim": 2048}, "selection": {"folds": 2, "seed": 0}}
    return root, params


@pytest.fixture(scope="module")
def clean(problem):
    root, params = problem
    return select(params, root / "embeddings", root / "targets")


def corrupt_validation(src: Path, dst: Path) -> None:
    """A copy of the npz whose y_validation member is unreadable garbage."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.glob("*.npz"):
        with zipfile.ZipFile(path) as zin, zipfile.ZipFile(dst / path.name, "w") as zout:
            for item in zin.namelist():
                data = b"\x93NUMPY\x01\x00garbage" if item == "y_validation.npy" else zin.read(item)
                zout.writestr(item, data)


def test_the_signal_source_is_picked_first(clean):
    result = clean
    first = result["steps"][0]
    assert first["pick"] == "signal"
    assert first["tried"]["signal"] > first["tried"]["noise"] + 0.5
    assert "signal" in result["selected"] and result["candidates"] == ["signal", "noise"]
    assert result["scored"]["signal"]["objective"] == result["steps"][0]["objective"]
    text = markdown(result)
    assert "**Selected:**" in text and "| signal |" in text


def test_the_validation_labels_are_never_read(problem, clean, tmp_path):
    root, params = problem
    corrupt_validation(root / "targets" / schema.LABELS_SUBDIR, tmp_path / schema.LABELS_SUBDIR)
    with pytest.raises(Exception):  # the garbage really is unreadable
        np.load(tmp_path / schema.LABELS_SUBDIR / f"{schema.CHURN}.npz")["y_validation"]

    class NoValidation(dict):
        def __getitem__(self, key):
            if key == "y_validation":
                raise AssertionError("y_validation was read")
            return super().__getitem__(key)

        def get(self, key, default=None):
            return self[key] if key in self else default

    def guarded(targets_dir, task):
        return NoValidation(load_train_labels(targets_dir, task))

    for result in (select(params, root / "embeddings", tmp_path), select(params, root / "embeddings", tmp_path, guarded)):
        assert result["selected"] == clean["selected"]
        assert result["scored"].keys() == clean["scored"].keys()
        assert all(result["scored"][k]["tasks"] == clean["scored"][k]["tasks"] for k in clean["scored"])


def test_oracle_is_not_a_candidate_and_missing_candidates_are_named(problem, tmp_path):
    root, params = problem
    write_profile(tmp_path / "oracle", np.arange(3, dtype=np.int64), np.zeros((3, 2), np.float16), {})
    from ubp.selection import default_candidates
    assert default_candidates({"models": {"oracle": {}, "x": {}}}, tmp_path, ["oracle"]) == []
    with pytest.raises(UbpError, match="'ghost' has no embedding"):
        select({**params, "selection": {"candidates": ["ghost"]}}, root / "embeddings", root / "targets")
