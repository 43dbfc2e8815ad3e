"""The evaluator against the official pipeline's runs on the conformance data (seed 1278, 2 threads).

Same initial weights, same batches, same optimiser: every per-epoch metric must match within the
conformance README's cross-CPU tolerance (5e-5: vectorised float sums differ between CPU generations,
up to 1.03e-5 measured on an AVX-512-FP16 Xeon) and the best epochs must be identical.
"""
import json

import numpy as np
import pytest

from ubp import schema
from ubp.evaluate.protocol import ProtocolConfig, align, evaluate_task

TOLERANCE = 5e-5  # ../shared/conformance/README.md, 'Tolerances in short'


def load_case(expected_dir, task):
    with np.load(expected_dir / "targets" / f"{task}.npz") as npz:
        targets = {k: npz[k] for k in npz.files}
    ids = np.load(expected_dir / "downstream" / "client_ids.npy")
    emb = np.load(expected_dir / "downstream" / "embeddings.npy")
    return targets, ids, emb


def check_run(expected_dir, size, task):
    run = json.loads((expected_dir / "downstream" / "runs" / f"{size}_seed1278.json").read_text())
    config = ProtocolConfig(thin=run["hidden_size_thin"], wide=run["hidden_size_wide"], seed=run["seed"],
                            threads=run["torch_threads"])
    targets, ids, emb = load_case(expected_dir, task)
    _, x, y_train, y_val = align(targets["client_ids"], targets["y_train"], targets["y_validation"], ids, emb)
    got = evaluate_task(task, x, y_train, y_val, targets.get("popularity"), config)
    want = run["tasks"][task]
    assert got["best_epoch"] == want["best_epoch"]
    assert abs(got["score"] - want["score"]) <= 1e-4  # equal unless the value sits on a rounding boundary
    for epoch, (ours, theirs) in enumerate(zip(got["per_epoch"], want["per_epoch"], strict=True)):
        for key, value in theirs.items():
            assert ours[key.removeprefix("val_")] == pytest.approx(value, abs=TOLERANCE), (task, epoch, key)


@pytest.mark.parametrize("task", schema.TASKS)
def test_align_reproduces_the_official_client_order(conformance_dir, task):
    targets, ids, emb = load_case(conformance_dir, task)
    shuffled = np.random.default_rng(0).permutation(len(targets["client_ids"]))
    got_ids, x, y_train, y_val = align(targets["client_ids"][shuffled], targets["y_train"][shuffled],
                                       targets["y_validation"][shuffled], ids, emb)
    assert np.array_equal(got_ids, targets["client_ids"])
    assert np.array_equal(y_train, targets["y_train"]) and np.array_equal(y_val, targets["y_validation"])
    row = {int(c): i for i, c in enumerate(ids)}
    assert np.array_equal(x, emb[[row[int(c)] for c in targets["client_ids"]]])


@pytest.mark.parametrize("task", schema.TASKS)
def test_small_network_matches_official_runs(conformance_dir, task):
    check_run(conformance_dir, "small", task)


@pytest.mark.slow
def test_official_network_matches_official_run_churn(conformance_dir):
    check_run(conformance_dir, "official", schema.CHURN)
