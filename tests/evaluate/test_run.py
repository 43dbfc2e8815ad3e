"""The evaluate stage on a tiny hand-made targets directory and embedding."""
import json

import numpy as np
import pytest
import yaml

from ubp import schema
from ubp import profile_store as store
from ubp.config import build
from ubp.evaluate import protocol, run
from ubp.io import UbpError
from tests.conftest import refuses_before_any_work

N_CLIENTS, N_LABELS, DIM = 300, 4, 8
EVAL_PARAMS = {"profile": "tiny", "sizes": {"tiny": {"thin": 16, "wide": 32}}, "seed": 1278, "epochs": 2,
               "batch_size": 128, "lr": 0.001, "threads": 2, "device": "cpu"}


def eval_config(**over) -> protocol.EvalConfig:
    """params.yaml's eval section of these tests, with `over` changed, as the stage builds it."""
    return build(protocol.EvalConfig, {**EVAL_PARAMS, **over}, "eval")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A repository-like cwd: params.yaml, data/targets/labels/*.npz and embeddings/good/."""
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(1000, 1000 + N_CLIENTS)).astype(np.int64)
    active = ids[::2]
    labels_dir = tmp_path / schema.TARGETS_DIR / schema.LABELS_SUBDIR
    labels_dir.mkdir(parents=True)
    for task in schema.TASKS:
        task_ids = np.sort(active if task == schema.CHURN else ids)
        width = 1 if task in schema.BINARY_TASKS else N_LABELS
        arrays = {"client_ids": task_ids,
                  "y_train": rng.integers(0, 2, (len(task_ids), width)).astype(np.uint8),
                  "y_validation": rng.integers(0, 2, (len(task_ids), width)).astype(np.uint8)}
        if width > 1:
            arrays |= {"label_ids": np.arange(width, dtype=np.int64), "popularity": np.arange(width, 0, -1)}
        np.savez(labels_dir / f"{task}.npz", **arrays)
    write_embedding(tmp_path, "good", ids, rng.normal(size=(N_CLIENTS, DIM)).astype(np.float16))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"eval": EVAL_PARAMS}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_embedding(root, profile, ids, emb):
    out = root / schema.EMBEDDINGS_DIR / profile
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "client_ids.npy", ids)
    np.save(out / "embeddings.npy", emb)


def test_writes_metrics(workdir):
    assert run.main(["good"]) == 0
    metrics = json.loads((workdir / schema.METRICS_DIR / "good.json").read_text())
    assert metrics["profile"] == "good" and metrics["eval_profile"] == "tiny"
    assert set(metrics["tasks"]) == set(schema.TASKS)
    churn, sku = metrics["tasks"][schema.CHURN], metrics["tasks"][schema.PROPENSITY_SKU]
    assert churn["n_clients"] == N_CLIENTS // 2 and churn["n_labels"] == 1 and "novelty" not in churn
    assert {"score", "auroc", "diversity", "novelty", "best_epoch", "n_clients", "n_labels",
            "labels_without_positive", "seconds"} <= set(sku)
    assert sku["n_clients"] == N_CLIENTS and sku["n_labels"] == N_LABELS and sku["best_epoch"] in (0, 1)


# Per task, the three epochs' scores a stubbed network reports, and the entry expected from them by hand:
# the first best epoch, its score rounded to 4 decimals.
EPOCH_SCORES = {
    schema.CHURN: ([0.61234, 0.70006, 0.69], 1, 0.7001),
    schema.PROPENSITY_CATEGORY: ([0.8, 0.8, 0.75], 0, 0.8),  # a tie: the first maximum
    schema.PROPENSITY_SKU: ([0.5, 0.6, 0.65004], 2, 0.65),
    schema.CONVERSION: ([0.9, 0.95, 0.99], 2, 0.99),
    schema.PROPENSITY_NEW_SKU: ([0.55556, 0.5, 0.5], 0, 0.5556),
    schema.PROPENSITY_PRICE: ([0.7, 0.72, 0.71], 1, 0.72),
}
EXPECTED_SUM = 4.4157  # 0.7001 + 0.8 + 0.65 + 0.99 + 0.5556 + 0.72


def test_scores_are_each_tasks_best_epoch_and_sum_adds_them(workdir, monkeypatch):
    """The stage's numbers against a hand-made table: a stub network checks that it gets each task's
    clients (churn: only the active ones) in the embedding's order with their own label rows, and
    reports the table's per-epoch scores; the entries and the sum must be the ones worked out above."""
    rng = np.random.default_rng(5)
    ids = rng.permutation(np.arange(1000, 1000 + N_CLIENTS)).astype(np.int64)
    emb = np.stack([ids - 1000, rng.normal(size=N_CLIENTS)], axis=1).astype(np.float16)  # ids exact in float16
    write_embedding(workdir, "coded", ids, emb)
    labels = {task: run.load_task_labels(workdir / schema.TARGETS_DIR, task) for task in schema.TASKS}
    seen = []

    def stub(task, x_fit, y_fit, x_score, y_score, popularity, config, progress=None):
        fit = protocol.as_rows(x_fit).block(0, len(x_fit))
        got_ids = fit[:, 0].astype(np.int64) + 1000
        members = set(labels[task]["client_ids"].tolist())
        want_ids = [i for i in ids.tolist() if i in members]
        assert got_ids.tolist() == want_ids, task  # the task's clients, in the submitted order
        assert np.array_equal(protocol.as_rows(x_score).block(0, len(x_score)), fit)  # scored on the same clients
        row = {c: i for i, c in enumerate(labels[task]["client_ids"].tolist())}
        for got, key in ((y_fit, "y_train"), (y_score, "y_validation")):
            assert np.array_equal(got, labels[task][key][[row[c] for c in want_ids]]), (task, key)
        seen.append(task)
        return [{"score": s, "auroc": s - 0.01 * e, "diversity": None if task in schema.BINARY_TASKS else 0.1 * e,
                 "novelty": None if task in schema.BINARY_TASKS else 0.2 * e}
                for e, s in enumerate(EPOCH_SCORES[task][0])]

    monkeypatch.setattr(protocol, "train_and_score", stub)
    metrics = run.evaluate_profile("coded", eval_config(epochs=3, workers=1))
    assert seen == list(schema.TASKS)
    for task, (scores, best, score) in EPOCH_SCORES.items():
        entry = metrics["tasks"][task]
        assert (entry["best_epoch"], entry["score"]) == (best, score), task
        assert entry["auroc"] == pytest.approx(scores[best] - 0.01 * best, abs=1e-9), task
        if task not in schema.BINARY_TASKS:
            assert (entry["diversity"], entry["novelty"]) == pytest.approx((0.1 * best, 0.2 * best), abs=1e-9)
        assert entry["n_clients"] == (N_CLIENTS // 2 if task == schema.CHURN else N_CLIENTS)
    assert metrics["sum"] == EXPECTED_SUM


@pytest.mark.parametrize("threads", [1, 2])
def test_memmap_route_equals_the_in_memory_route(workdir, tmp_path, monkeypatch, threads):
    """A float32 file read block by block (here a batch per block) gives exactly the numbers of the
    aligned arrays in memory: the same float32 values in the same batches."""
    good, targets = workdir / schema.EMBEDDINGS_DIR / "good", workdir / schema.TARGETS_DIR
    ids, emb = np.load(good / "client_ids.npy"), np.load(good / "embeddings.npy")
    config = protocol.ProtocolConfig.from_params({**EVAL_PARAMS, "threads": threads})
    monkeypatch.setattr(run, "BLOCK_BYTES", 4 * DIM * 128)  # the float32 file written 128 rows at a time
    run.write_float32(good / "embeddings.npy", tmp_path / "x.npy")
    assert np.array_equal(np.load(tmp_path / "x.npy"), emb.astype(np.float32))
    monkeypatch.setattr(protocol, "BLOCK_BYTES", 4 * DIM * 128)  # and read one batch at a time
    for task in schema.TASKS:
        labels = run.load_task_labels(targets, task)
        _, x, y_train, y_val = protocol.align(labels["client_ids"], labels["y_train"], labels["y_validation"], ids, emb)
        want = protocol.evaluate_task(task, x, y_train, y_val, labels.get("popularity"), config)
        assert run.write_task(targets, task, ids, tmp_path / task) == len(x)
        # churn reads a subset of the rows by index, the other tasks every row in order
        assert (tmp_path / task / "rows.npy").exists() == (task == schema.CHURN)
        got = run.run_task(task, tmp_path / "x.npy", tmp_path / task, config)
        assert got["per_epoch"] == want["per_epoch"], task
        assert (got["best_epoch"], got["n_clients"]) == (want["best_epoch"], want["n_clients"])


def test_sample_clients_scores_one_seeded_sample_in_each_profiles_order(workdir, monkeypatch):
    """eval.sample_clients: every task gets the sampled clients it has (churn: the active ones), in
    the profile's own row order with their own label rows; two profiles storing their rows in other
    orders are scored on the same clients; another eval.seed draws another sample."""
    rng = np.random.default_rng(6)
    labels = {task: run.load_task_labels(workdir / schema.TARGETS_DIR, task) for task in schema.TASKS}
    orders = {name: rng.permutation(np.arange(1000, 1000 + N_CLIENTS)).astype(np.int64) for name in ("a", "b")}
    for name, ids in orders.items():  # the embedding codes each row's client id (exact in float16)
        write_embedding(workdir, name, ids, np.stack([ids - 1000, ids - 1000], axis=1).astype(np.float16))
    seen = {}

    def stub(task, x_fit, y_fit, x_score, y_score, popularity, config, progress=None):
        got = protocol.as_rows(x_fit).block(0, len(x_fit))[:, 0].astype(np.int64) + 1000
        row = {c: i for i, c in enumerate(labels[task]["client_ids"].tolist())}
        for y, key in ((y_fit, "y_train"), (y_score, "y_validation")):
            assert np.array_equal(y, labels[task][key][[row[c] for c in got.tolist()]]), (task, key)
        seen[task] = got
        return [{"score": 0.5, "auroc": 0.5, "diversity": 0.0, "novelty": 0.0}]

    monkeypatch.setattr(protocol, "train_and_score", stub)
    samples = {}
    for name, ids in orders.items():
        for seed in (1278, 1279):
            seen.clear()
            metrics = run.evaluate_profile(name, eval_config(workers=1, sample_clients=100, seed=seed, epochs=1))
            assert metrics["sample_clients"] == 100
            sample = seen[schema.PROPENSITY_SKU]
            assert len(sample) == 100 and len(np.unique(sample)) == 100
            position = {c: i for i, c in enumerate(ids.tolist())}
            assert [position[c] for c in sample.tolist()] == sorted(position[c] for c in sample.tolist())
            for task, got in seen.items():
                members = set(labels[task]["client_ids"].tolist())
                assert got.tolist() == [c for c in sample.tolist() if c in members], task
                assert metrics["tasks"][task]["n_clients"] == len(got)
            assert 0 < len(seen[schema.CHURN]) < 100  # churn: the sampled clients that are active
            samples[name, seed] = set(sample.tolist())
    assert samples["a", 1278] == samples["b", 1278] and samples["a", 1279] == samples["b", 1279]
    assert samples["a", 1278] != samples["a", 1279]


def test_sampled_scores_are_the_protocol_on_the_sampled_rows(workdir):
    """The real networks: a sampled evaluation gives exactly the scores of evaluate_task on the
    sampled clients' aligned arrays; a sample as large as the clients is the full evaluation."""
    good = workdir / schema.EMBEDDINGS_DIR / "good"
    ids, emb = np.load(good / "client_ids.npy"), np.load(good / "embeddings.npy")
    sampled = run.evaluate_profile("good", eval_config(workers=1, sample_clients=150))
    rows = run.sample_rows(ids, 150, EVAL_PARAMS["seed"])
    config = protocol.ProtocolConfig.from_params(EVAL_PARAMS)
    for task in schema.TASKS:
        labels = run.load_task_labels(workdir / schema.TARGETS_DIR, task)
        keep = np.isin(labels["client_ids"], ids[rows])
        _, x, y_train, y_val = protocol.align(labels["client_ids"][keep], labels["y_train"][keep],
                                              labels["y_validation"][keep], ids[rows], emb[rows])
        want = protocol.evaluate_task(task, x, y_train, y_val, labels.get("popularity"), config)
        got = sampled["tasks"][task]
        assert (got["score"], got["auroc"], got["n_clients"]) == (want["score"], round(want["auroc"], 6), len(x)), task
    full, whole = run.evaluate_profile("good", eval_config(workers=1)), run.evaluate_profile(
        "good", eval_config(workers=1, sample_clients=N_CLIENTS))
    assert "sample_clients" not in whole and whole["tasks"] == {t: {**e, "seconds": whole["tasks"][t]["seconds"]}
                                                                for t, e in full["tasks"].items()}


def test_worker_processes_give_the_same_scores_as_one_process(workdir):
    one = run.evaluate_profile("good", eval_config(threads=1, workers=1))
    two = run.evaluate_profile("good", eval_config(threads=1, workers=2))
    assert list(two["tasks"]) == list(schema.TASKS)  # task order, whichever process finished first
    for task in schema.TASKS:
        for key in ("score", "auroc", "best_epoch", "n_clients", "labels_without_positive"):
            assert two["tasks"][task][key] == one["tasks"][task][key], (task, key)
    assert two["sum"] == one["sum"]
    for bad, why in ((-1, "a whole number >= 1"), (0, "a whole number >= 1"), (1.5, "an integer or null"),
                     ("2", "an integer or null")):  # 0 used to be read as 1
        with pytest.raises(UbpError, match=f"eval.workers must be {why}"):
            eval_config(workers=bad)
    assert eval_config(workers=None).workers is None  # emptied by `dvc exp run -S eval.workers=null`: 1 process


def test_skipped_profile(workdir):
    out = workdir / schema.EMBEDDINGS_DIR / "oracle"
    out.mkdir(parents=True)
    (out / store.SKIPPED).write_text("synthetic only\n")
    run.main(["oracle"])
    metrics = json.loads((workdir / schema.METRICS_DIR / "oracle.json").read_text())
    assert metrics == {"profile": "oracle", "eval_profile": "tiny", "skipped": "synthetic only"}


@pytest.mark.parametrize("mutate, message", [
    (lambda ids, emb: (ids, np.where(np.arange(len(emb))[:, None] == 5, np.nan, emb)), "NaN or inf in 1 rows"),
    (lambda ids, emb: (ids[:-1], emb[:-1]), "1 missing"),
    (lambda ids, emb: (np.r_[ids[:-1], 99], emb), "1 not relevant"),
    (lambda ids, emb: (np.r_[ids[:-1], ids[0]], emb), "1 duplicate client ids"),
    (lambda ids, emb: (ids.astype(np.int32), emb), "expected a 1-D int64 array"),
    (lambda ids, emb: (ids, emb[:, 0]), "expected a 2-D float array"),
    (lambda ids, emb: (ids, np.zeros((len(ids), 2049), np.float16)), "2049 dimensions"),
])
def test_rejects_bad_embedding(workdir, mutate, message):
    good = workdir / schema.EMBEDDINGS_DIR / "good"
    ids, emb = mutate(np.load(good / "client_ids.npy"), np.load(good / "embeddings.npy"))
    write_embedding(workdir, "bad", ids, emb)
    with pytest.raises(UbpError, match=message):
        run.main(["bad"])
    assert not (workdir / schema.METRICS_DIR / "bad.json").exists()


def test_missing_labels(workdir):
    (workdir / schema.TARGETS_DIR / schema.LABELS_SUBDIR / "conversion.npz").unlink()
    with pytest.raises(UbpError, match="run the targets stage first"):
        run.main(["good"])


def test_usage():
    with pytest.raises(UbpError, match="usage"):
        run.main([])


@pytest.mark.parametrize("bad, match", [
    ({"epoch": 5}, r"unknown key 'eval\.epoch'; did you mean 'epochs'"),
    ({"lr": "fast"}, r"eval\.lr must be a number, got 'fast'"),
    ({"profile": "huge"}, r"no network size 'huge' under eval\.sizes \(have: tiny\)"),
    ({"sizes": {"tiny": {"thin": 16}}}, r"eval\.sizes\.tiny needs 'wide'"),
    ({"sample_clients": 0}, r"eval\.sample_clients must be a whole number >= 1 or null, got 0"),
    ({"sample_clients": 1.5}, r"eval\.sample_clients must be an integer or null, got 1\.5"),
])
def test_stage_refuses_bad_settings_before_any_work(workdir, monkeypatch, bad, match):
    """With the embedding and labels there, a typo or a wrong type in `eval` still stops the stage unwritten."""
    refuses_before_any_work(run.main, ["good"], {"eval": {**EVAL_PARAMS, **bad}}, match, workdir, monkeypatch)
