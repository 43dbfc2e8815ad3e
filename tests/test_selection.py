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


# --- scoring on a seeded sample of the clients -------------------------------------------------------

def spy_on_scoring(monkeypatch) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Replace the network by a spy recording (task, rows trained on, rows scored on)."""
    from ubp import selection
    seen = []

    def spy(task, x_fit, y_fit, x_score, y_score, popularity, config):
        seen.append((task, np.asarray(x_fit, np.float64), np.asarray(x_score, np.float64)))
        return 0.5

    monkeypatch.setattr(selection, "fit_and_score", spy)
    return seen


def test_a_client_sample_is_all_the_scorer_sees_and_the_seed_fixes_it(problem, monkeypatch):
    from ubp.selection import inner_scorer
    root, params = problem
    seen = spy_on_scoring(monkeypatch)
    scorer = inner_scorer(params, targets_dir=root / "targets", seed=3, sample_clients=50)
    sample = scorer.client_ids
    assert len(sample) == 50 and set(sample) < set(range(1000, 1000 + N))
    scorer.score(sample[:, None].astype(np.float64))  # column 0 = the client id: each row names its client
    assert {t for t, _, _ in seen} == set(schema.TASKS)
    for task, fit, score in seen:
        assert set(fit[:, 0]) | set(score[:, 0]) <= set(sample)
        assert not set(fit[:, 0]) & set(score[:, 0])  # the fold's clients are not trained on
    assert set(np.concatenate([s[:, 0] for t, _, s in seen if t == schema.CONVERSION])) == set(sample)
    again = inner_scorer(params, targets_dir=root / "targets", seed=3, sample_clients=50)
    other = inner_scorer(params, targets_dir=root / "targets", seed=4, sample_clients=50)
    assert np.array_equal(again.client_ids, sample) and not np.array_equal(other.client_ids, sample)
    for size in (N, N + 1, None):  # at least every client, or none asked: all of them
        assert len(inner_scorer(params, targets_dir=root / "targets", sample_clients=size).client_ids) == N
    for bad in (0, True, "50", 2.5):
        with pytest.raises(UbpError, match="sample_clients"):
            inner_scorer(params, targets_dir=root / "targets", sample_clients=bad)


def test_select_scores_every_set_on_the_same_sample(problem, monkeypatch):
    root, params = problem
    seen = spy_on_scoring(monkeypatch)
    result = select({**params, "selection": {**params["selection"], "sample_clients": 60}},
                    root / "embeddings", root / "targets")
    conversion = [(fit, score) for t, fit, score in seen if t == schema.CONVERSION]
    assert len(conversion) == 2 * result["n_scored"]  # two folds per scored set
    assert {len(fit) + len(score) for fit, score in conversion} == {60}
    assert "a sample of 60 clients drawn with seed 0" in markdown(result)
