"""Ensemble selection: the greedy search on a hand-made objective, and the whole selection on the tiny
dataset where one source carries the open tasks' train-window labels and the other is noise; the
objective is the three open tasks only, and no hidden-task or validation-window file is needed."""
import json
import shutil

import numpy as np
import pytest
import yaml

from ubp import schema
from ubp.profile_store import write as write_profile_dir
from ubp.io import UbpError
from ubp.inner_labels import open_train_labels
from ubp.combine.selection import InnerScorer, greedy, inner_scorer, main, select
from ubp.combine.selection_report import earlier, markdown

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


def signal_profile(labels: dict[str, dict], rng) -> np.ndarray:
    """The open tasks' train-window labels side by side (churn 0.5 for inactive clients), plus noise."""
    ids = labels[schema.PROPENSITY_CATEGORY]["client_ids"]  # every relevant client, in order
    churn = np.full(len(ids), 0.5)
    churn[np.isin(ids, labels[schema.CHURN]["client_ids"])] = labels[schema.CHURN]["y_train"][:, 0]
    z = np.hstack([churn[:, None], labels[schema.PROPENSITY_CATEGORY]["y_train"],
                   labels[schema.PROPENSITY_SKU]["y_train"]])
    return z + 0.1 * rng.standard_normal(z.shape)


@pytest.fixture(scope="module")
def problem(tiny_dirs, tmp_path_factory):
    """A copy of the tiny dataset under root/data and two stored profiles under root/embeddings:
    `signal` carries the open tasks' train-window labels, `noise` is noise."""
    root = tmp_path_factory.mktemp("selection")
    for name in ("canonical", "split", "targets"):
        shutil.copytree(tiny_dirs[name], root / "data" / name)
    rng = np.random.default_rng(0)
    labels = open_train_labels(tiny_dirs["canonical"], tiny_dirs["split"])
    ids = labels[schema.PROPENSITY_CATEGORY]["client_ids"]
    write_profile_dir(root / "embeddings" / "noise", ids, {}, rng.standard_normal((len(ids), 8)).astype(np.float16))
    signal = signal_profile(labels, rng).astype(np.float16)
    write_profile_dir(root / "embeddings" / "signal", ids[::-1], {}, signal[::-1])  # any row order
    params = {"eval": EVAL, "models": {"signal": {"method": "svd"}, "noise": {"method": "rcae"}},
              "ensemble": {"max_dim": 2048}, "selection": {"folds": 2, "seed": 0}}
    return root, params


@pytest.fixture(scope="module")
def clean(problem):
    root, params = problem
    return select(params, root / "embeddings", root / "data" / "canonical", root / "data" / "split")


def test_the_signal_source_is_picked_first(clean):
    result = clean
    first = result["steps"][0]
    assert first["pick"] == "signal"
    assert first["tried"]["signal"] > first["tried"]["noise"] + 0.5
    assert "signal" in result["selected"] and result["candidates"] == ["signal", "noise"]
    assert result["scored"]["signal"]["objective"] == result["steps"][0]["objective"]
    text = markdown(result)
    assert "**Selected:**" in text and "| signal |" in text
    assert "| churn | category | sku | objective |" in text and "new_sku" not in text


def test_the_report_sets_an_earlier_selection_beside_this_one(clean):
    six = {t: 0.5 for t in schema.TASKS}
    before = {"file": "old.json", "tasks": list(schema.TASKS), "selected": ["noise"], "objective": 3.0,
              "scored": {"noise": {"objective": 3.0, "tasks": six}, "gone": {"objective": 2.0, "tasks": six}}}
    text = markdown({**clean, "before": before})
    now = clean["scored"]
    assert "selected **noise** (objective 3.0)" in text
    assert f"| noise | 3.0000 | 1.5000 | {now['noise']['objective']:.4f} |" in text  # 1.5: the three open tasks
    assert f"| signal | — | — | {now['signal']['objective']:.4f} |" in text
    assert "| gone | 2.0000 | 1.5000 | — |" in text


def test_an_earlier_report_without_tasks_scored_all_six(clean, tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({k: v for k, v in clean.items() if k != "tasks"}))  # as reports made before
    assert earlier(path)["tasks"] == list(schema.TASKS)
    assert earlier(path)["selected"] == clean["selected"]
    with pytest.raises(UbpError, match="file not found"):
        earlier(tmp_path / "nowhere.json")


def test_the_objective_is_the_sum_of_the_three_open_tasks_only(problem, clean, monkeypatch):
    assert result_tasks(clean) == {schema.CHURN, schema.PROPENSITY_CATEGORY, schema.PROPENSITY_SKU}
    for row in clean["scored"].values():
        assert tuple(row["tasks"]) == schema.OPEN_TASKS
        assert row["objective"] == round(sum(row["tasks"].values()), 4)
    root, params = problem
    seen = spy_on_scoring(monkeypatch)
    scorer = inner_scorer(params, canonical_dir=root / "data" / "canonical", split_dir=root / "data" / "split")
    scorer.score(np.zeros((len(scorer.client_ids), 2)))
    assert sorted({task for task, _, _ in seen}) == sorted(schema.OPEN_TASKS)  # no network for a hidden task
    labels = open_train_labels(root / "data" / "canonical", root / "data" / "split")
    hidden = {"client_ids": scorer.client_ids, "y_train": np.zeros((len(scorer.client_ids), 1), np.uint8)}
    with pytest.raises(UbpError, match="hidden tasks only measure"):
        InnerScorer({**labels, schema.CONVERSION: hidden}, scorer.config)
    with pytest.raises(UbpError, match="exactly the open tasks"):
        InnerScorer({t: lab for t, lab in labels.items() if t != schema.PROPENSITY_SKU}, scorer.config)


def result_tasks(result: dict) -> set[str]:
    return set(result["tasks"]) | {t for row in result["scored"].values() for t in row["tasks"]}


# Files of the tiny dataset that a selection blind to the hidden tasks and the validation window
# does without (paths under data/; each is checked to exist before it is removed).
HIDDEN_TASK_FILES = [f"targets/{name}" for task in (schema.PROPENSITY_NEW_SKU, schema.PROPENSITY_PRICE)
                     for name in (schema.label_file(task), schema.popularity_file(task))] + [
    f"targets/{schema.LABELS_SUBDIR}/{task}.npz" for task in (schema.CONVERSION, schema.PROPENSITY_NEW_SKU,
                                                             schema.PROPENSITY_PRICE)]
VALIDATION_WINDOW_FILES = [
    f"split/{schema.VALIDATION_TARGET}.parquet",
    *(f"targets/{schema.LABELS_SUBDIR}/{task}.npz" for task in schema.OPEN_TASKS),  # y_validation beside y_train
    "targets/summary.json",  # counts of the validation window's positives
    *(f"canonical/{event}.parquet" for event in schema.EVENT_TYPES),  # every event, after the split too
]


def test_selection_runs_and_chooses_alike_without_any_hidden_task_or_validation_window_file(
        problem, clean, tmp_path, monkeypatch):
    root, params = problem
    shutil.copytree(root, tmp_path / "root")
    for name in HIDDEN_TASK_FILES + VALIDATION_WINDOW_FILES:
        path = tmp_path / "root" / "data" / name
        assert path.is_file(), f"the tiny dataset has no {name}: update this list"
        path.unlink()
    # sort_keys=False: the candidates keep their order, which is the order of the columns
    (tmp_path / "root" / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path / "root")  # `python -m ubp select`'s default paths now lead to the pruned copy
    assert main(["--out", "reports/selection"]) == 0
    result = json.loads((tmp_path / "root" / "reports" / "selection.json").read_text())
    assert result["selected"] == clean["selected"]
    assert result["scored"].keys() == clean["scored"].keys()
    assert all(result["scored"][k]["tasks"] == clean["scored"][k]["tasks"] for k in clean["scored"])


def test_oracle_and_combined_profiles_are_not_candidates_and_missing_candidates_are_named(problem, tmp_path):
    root, params = problem
    for name in ("oracle", "stack", "plain"):
        write_profile_dir(tmp_path / name, np.arange(3, dtype=np.int64), {}, np.zeros((3, 2), np.float16))
    from ubp.combine.selection import default_candidates
    models = {"oracle": {}, "x": {}, "stack": {"method": "stacked"}, "plain": {"method": "random"}}
    assert default_candidates({"models": models}, tmp_path, ["oracle"]) == ["plain"]  # by its method's trait
    with pytest.raises(UbpError, match="'ghost' has no embedding"):
        select({**params, "selection": {"candidates": ["ghost"]}}, root / "embeddings", root / "data" / "canonical",
               root / "data" / "split")


# --- scoring on a seeded sample of the clients -------------------------------------------------------

def spy_on_scoring(monkeypatch) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Replace the network by a spy recording (task, rows trained on, rows scored on)."""
    from ubp.combine import selection
    seen = []

    def spy(task, x_fit, y_fit, x_score, y_score, popularity, config):
        seen.append((task, np.asarray(x_fit, np.float64), np.asarray(x_score, np.float64)))
        return 0.5

    monkeypatch.setattr(selection, "fit_and_score", spy)
    return seen


def test_a_client_sample_is_all_the_scorer_sees_and_the_seed_fixes_it(problem, monkeypatch):
    root, params = problem
    dirs = {"canonical_dir": root / "data" / "canonical", "split_dir": root / "data" / "split"}
    relevant = np.load(dirs["canonical_dir"] / schema.RELEVANT_CLIENTS_FILE)
    seen = spy_on_scoring(monkeypatch)
    scorer = inner_scorer(params, seed=3, sample_clients=50, **dirs)
    sample = scorer.client_ids
    assert len(sample) == 50 and set(sample) < set(relevant)
    scorer.score(sample[:, None].astype(np.float64))  # column 0 = the client id: each row names its client
    assert {t for t, _, _ in seen} == set(schema.OPEN_TASKS)
    for task, fit, score in seen:
        assert set(fit[:, 0]) | set(score[:, 0]) <= set(sample)
        assert not set(fit[:, 0]) & set(score[:, 0])  # the fold's clients are not trained on
    category = [s[:, 0] for t, _, s in seen if t == schema.PROPENSITY_CATEGORY]  # a task of every relevant client
    assert set(np.concatenate(category)) == set(sample)
    again = inner_scorer(params, seed=3, sample_clients=50, **dirs)
    other = inner_scorer(params, seed=4, sample_clients=50, **dirs)
    assert np.array_equal(again.client_ids, sample) and not np.array_equal(other.client_ids, sample)
    for size in (len(relevant), len(relevant) + 1, None):  # at least every client, or none asked: all of them
        assert len(inner_scorer(params, sample_clients=size, **dirs).client_ids) == len(relevant)
    for bad in (0, True, "50", 2.5):
        with pytest.raises(UbpError, match="sample_clients"):
            inner_scorer(params, sample_clients=bad, **dirs)


def test_select_scores_every_set_on_the_same_sample(problem, monkeypatch):
    root, params = problem
    seen = spy_on_scoring(monkeypatch)
    result = select({**params, "selection": {**params["selection"], "sample_clients": 60}},
                    root / "embeddings", root / "data" / "canonical", root / "data" / "split")
    category = [(fit, score) for t, fit, score in seen if t == schema.PROPENSITY_CATEGORY]
    assert len(category) == 2 * result["n_scored"]  # two folds per scored set
    assert {len(fit) + len(score) for fit, score in category} == {60}
    assert "a sample of 60 clients drawn with seed 0" in markdown(result)


@pytest.mark.parametrize("sections, message", [
    ({"selection": {"fold": 3}}, r"unknown key 'selection\.fold'; did you mean 'folds'"),
    ({"selection": {"min_gain": "0.01"}}, r"selection\.min_gain must be a number, got '0\.01'"),
    ({"selection": {"folds": 1}}, r"selection needs folds >= 2"),
    ({"selection": {"max_sources": 0}}, r"selection\.max_sources must be a whole number >= 1"),
    ({"ensemble": {"per_source": {"signal": {"wieght": 2}}}}, r"unknown key 'ensemble\.per_source\.signal\.wieght'"),
])
def test_a_typo_or_wrong_type_in_its_sections_stops_selection_before_any_work(problem, tmp_path, sections, message):
    """Refused before a label, profile or candidate is read: the directories given do not exist."""
    root, params = problem
    with pytest.raises(UbpError, match=message):
        select({**params, **sections}, tmp_path / "no_embeddings", tmp_path / "no_canonical", tmp_path / "no_split")


def test_networks_trained_in_worker_processes_score_as_in_one(problem):
    root, params = problem
    dirs = {"canonical_dir": root / "data" / "canonical", "split_dir": root / "data" / "split"}
    one = inner_scorer(params, sample_clients=120, **dirs)
    two = inner_scorer({**params, "eval": {**EVAL, "workers": 2}}, sample_clients=120, **dirs)
    assert (one.workers, two.workers) == (1, 2)
    x = np.random.default_rng(5).standard_normal((len(one.client_ids), 6)).astype(np.float16)
    first, second = one.score(x), two.score(x)
    assert tuple(first) == tuple(second) == schema.OPEN_TASKS
    assert first == second  # each network is seeded on its own: the process it ran in changes no bit
    assert len(set(first.values())) > 1  # three real scores, not one constant
