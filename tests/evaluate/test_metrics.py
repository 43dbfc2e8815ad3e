"""The task metrics against hand-computed values and the official calculators' outputs."""
import json
import math

import numpy as np
import pytest

from ubp.evaluate.metrics import TaskMetrics, compute_metrics, labels_without_positive, task_score


def logit(p):
    return np.log(np.asarray(p, np.float64) / (1 - np.asarray(p, np.float64))).astype(np.float32)


# 4 clients x 3 labels. Sigmoid values chosen so the numbers can be worked out by hand:
#   c1 [.02 .01 .01]  c2 [.01 .02 .01]  c3 [.01 .01 .01]  c4 [.02 .02 .02]
SIGMOID = np.array([[0.02, 0.01, 0.01], [0.01, 0.02, 0.01], [0.01, 0.01, 0.01], [0.02, 0.02, 0.02]])
TARGETS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]])
POPULARITY = np.array([2, 1, 1])  # / (2+1+1) -> weights .5 .25 .25  (k = min(10, 3) = 3)

# AUROC per label (ties count 1/2):
#   label 0: positives c1, c4 (.02) above negatives c2, c3 (.01)               -> 1
#   label 1: positive c2 (.02) vs c1 .01 (win), c3 .01 (win), c4 .02 (tie)     -> 2.5/3
#   label 2: no positive                                                        -> 0, still in the mean
HAND_AUROC = (1 + 2.5 / 3 + 0) / 3
# Diversity: rows normalised are [.5 .25 .25] (c1, c2; entropy 1.5 bits) or uniform (c3, c4; log2 3).
HAND_DIVERSITY = (1.5 + 1.5 + 2 * math.log2(3)) / 4 / math.log2(3)
# Novelty: Σ top-3 sigmoid x weight per client:
#   c1 .02*.5 + .01*.25 + .01*.25 = .015;  c2 .01*.5 + .02*.25 + .01*.25 = .0125;  c3 .01;  c4 .02
#   mean P = .0575 / 4 = .014375 -> (1 - P)^100
HAND_NOVELTY = (1 - 0.014375) ** 100


def test_hand_computed_propensity():
    got = compute_metrics("propensity_category", logit(SIGMOID), TARGETS, POPULARITY)
    assert got["auroc"] == pytest.approx(HAND_AUROC, abs=1e-6)
    assert got["diversity"] == pytest.approx(HAND_DIVERSITY, abs=1e-6)
    assert got["novelty"] == pytest.approx(HAND_NOVELTY, abs=1e-5)
    assert got["score"] == pytest.approx(0.8 * HAND_AUROC + 0.1 * HAND_DIVERSITY + 0.1 * HAND_NOVELTY, abs=1e-5)


def test_hand_computed_binary():
    # positives score 2 and .5, negatives -1 and .5: pairs won 2>-1, 2>.5, .5>-1, tie .5=.5 -> 3.5/4
    got = compute_metrics("churn", [[2.0], [-1.0], [0.5], [0.5]], [[1], [0], [1], [0]])
    assert got["auroc"] == pytest.approx(0.875)
    assert got["score"] == got["auroc"] and got["diversity"] is None and got["novelty"] is None


def test_label_without_positive_scores_zero_in_macro_mean():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 4))
    y[:, 2] = 0
    logits = (y * 3.0 + rng.normal(size=y.shape)).astype(np.float32)
    per_label = [compute_metrics("churn", logits[:, [j]], y[:, [j]])["auroc"] for j in range(4)]
    assert per_label[2] == 0.0
    got = compute_metrics("propensity_sku", logits, y, np.ones(4))["auroc"]
    assert got == pytest.approx(sum(per_label) / 4, abs=1e-6)  # the empty label counts as a 0
    assert labels_without_positive(y) == 1


def test_labels_without_positive_counts_both_sides():
    y = np.array([[0, 1, 1], [0, 1, 0]])
    assert labels_without_positive(y) == 2  # column 0 has no positive, column 1 no negative
    assert labels_without_positive(np.array([0, 1, 0])) == 0


def test_single_batch_equals_batched_when_logits_are_not_probabilities():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (300, 5)).astype(np.float32)
    y = rng.integers(0, 2, (300, 5))
    a = compute_metrics("propensity_price", logits, y, np.arange(1, 6), batch_size=128)
    b = compute_metrics("propensity_price", logits, y, np.arange(1, 6), batch_size=None)
    assert a["auroc"] == pytest.approx(b["auroc"], abs=1e-7)
    assert a["novelty"] == pytest.approx(b["novelty"], abs=1e-6)


def test_accumulator_resets_after_compute():
    m = TaskMetrics("conversion")
    m.update(np.array([[1.0], [-1.0]]), np.array([[1], [0]]))
    assert m.compute()["auroc"] == 1.0
    m.update(np.array([[-1.0], [1.0]]), np.array([[1], [0]]))
    assert m.compute()["auroc"] == 0.0


def test_task_score_weights():
    assert task_score("churn", 0.7) == 0.7
    assert task_score("propensity_sku", 0.5, 1.0, 0.0) == pytest.approx(0.5)


CASES = ["binary", "binary_ties", "binary_extreme", "binary_unit_interval_batch", "multilabel_L100",
         "multilabel_no_positive", "multilabel_ties", "multilabel_extreme_L12", "multilabel_L7_k7"]


@pytest.mark.parametrize("feeding, batch_size", [("batch_128", 128), ("single_update", None)])
@pytest.mark.parametrize("case", CASES)
def test_official_metric_cases(conformance_dir, case, feeding, batch_size):
    expected = json.loads((conformance_dir / "metrics" / "official_metrics.json").read_text())["cases"][case][feeding]
    with np.load(conformance_dir / "metrics" / "cases" / f"{case}.npz") as npz:
        data = {k: npz[k] for k in npz.files}
    task = "churn" if "popularity" not in data else "propensity_sku"
    got = compute_metrics(task, data["logits"], data["targets"], data.get("popularity"), batch_size=batch_size)
    for key, value in expected.items():
        assert got[key.removeprefix("val_")] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("logits, targets, message", [
    ([[0.5, 1.0]], [[1, 2]], "0 or 1"),
    ([[0.5, 1.0]], [[1]], "shape"),
])
def test_update_rejects_bad_targets(logits, targets, message):
    with pytest.raises(ValueError, match=message):
        TaskMetrics("propensity_sku", np.ones(2)).update(np.array(logits, np.float32), np.array(targets))
