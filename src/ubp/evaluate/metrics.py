"""The challenge's task metrics: AUROC, diversity, novelty and the task score.

Everything here reproduces the official metric calculators (RecSys Challenge 2025), including their
quirks, because our scores must be comparable with the leaderboard:

* AUROC is torchmetrics itself, updated once per validation batch with raw logits. torchmetrics
  applies a sigmoid to a batch only if some value lies outside [0, 1], and scores a label with no
  positive (or no negative) as 0 inside the macro mean.
* Diversity and novelty are accumulated batch by batch in float32 with 1e-9 guards.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torchmetrics

from ubp import schema

NOVELTY_TOP_K = 10  # novelty looks at each client's k = min(10, L) highest predictions
NOVELTY_EXPONENT = 100
EPS = 1e-9  # the official code's 10e-10 guard
PROPENSITY_WEIGHTS = {"auroc": 0.8, "diversity": 0.1, "novelty": 0.1}


def _as_tensor(array, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().to(dtype)
    return torch.as_tensor(np.asarray(array)).to(dtype)


def _as_targets(array) -> torch.Tensor:
    """0/1 targets as an integer tensor; uint8 stays uint8 (torchmetrics keeps every batch's targets
    until compute(): 1 byte a value instead of 8 at 1M clients x 100 labels). The AUROC compares
    them with 1, so the dtype does not change it."""
    t = array.detach() if isinstance(array, torch.Tensor) else torch.as_tensor(np.asarray(array))
    return t if t.dtype == torch.uint8 else t.to(torch.long)


def _as_2d(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, 1) if t.ndim == 1 else t


def is_binary(task: str) -> bool:
    return task in schema.BINARY_TASKS


def task_score(task: str, auroc: float, diversity: float | None = None, novelty: float | None = None) -> float:
    """Binary tasks: the AUROC. Propensity tasks: 0.8·AUROC + 0.1·diversity + 0.1·novelty."""
    if is_binary(task):
        return float(auroc)
    w = PROPENSITY_WEIGHTS
    return w["auroc"] * auroc + w["diversity"] * diversity + w["novelty"] * novelty


def labels_without_positive(y) -> int:
    """How many label columns have no positive (or no negative): the AUROC scores those 0."""
    y = np.asarray(y)
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    positives = (y > 0).sum(axis=0)
    return int(((positives == 0) | (positives == y.shape[0])).sum())


def diversity_batch_sum(logits: torch.Tensor) -> torch.Tensor:
    """Σ over the batch's clients of the entropy (bits) of the L1-normalised sigmoid predictions."""
    q = torch.sigmoid(logits.float())
    q = q / q.sum(dim=1, keepdim=True)
    return -(q * torch.log2(q + EPS)).sum()


def novelty_weights(popularity) -> torch.Tensor:
    """popularity / (sum of its k largest values), float32, k = min(10, L)."""
    pop = _as_tensor(popularity, torch.float64).reshape(-1)
    k = min(NOVELTY_TOP_K, pop.numel())
    return (pop / torch.topk(pop, k).values.sum()).float()


def novelty_batch_sum(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ over the batch's clients of Σ top-k sigmoid values × normalised popularity of their labels."""
    p = torch.sigmoid(logits.float())
    k = min(NOVELTY_TOP_K, p.shape[1])
    values, index = torch.topk(p, k, dim=1)
    return (values * weights.to(p.device)[index]).sum()


class TaskMetrics:
    """Accumulates one validation pass of a task, batch by batch, like the official calculators.

    `update(logits, targets)` once per batch (N×L logits, 0/1 targets); `compute()` returns
    auroc, diversity, novelty (None for binary tasks) and the task score, and resets.
    """

    def __init__(self, task: str, popularity=None, device: str | torch.device = "cpu"):
        self.task = task
        self.binary = is_binary(task)
        # validate_args=False: torchmetrics' per-batch checks (a torch.unique of the targets) cost a
        # quarter of a validation batch; update() checks the same things more cheaply.
        if self.binary:
            self.auroc = torchmetrics.AUROC(task="binary", validate_args=False)
            self.weights = None
        else:
            if popularity is None:
                raise ValueError(f"task {task}: propensity metrics need the labels' popularity")
            self.weights = novelty_weights(popularity).to(device)
            self.n_labels = self.weights.numel()
            self.auroc = torchmetrics.AUROC(task="multilabel", num_labels=self.n_labels, validate_args=False)
        self.auroc = self.auroc.to(device)
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.auroc.reset()
        self.diversity_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        self.novelty_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        self.n = 0

    @torch.no_grad()
    def update(self, logits, targets) -> None:
        logits = _as_2d(_as_tensor(logits, torch.float32)).to(self.device)
        targets = _as_2d(_as_targets(targets)).to(self.device)
        if logits.shape != targets.shape:
            raise ValueError(f"task {self.task}: logits of shape {tuple(logits.shape)}, targets {tuple(targets.shape)}")
        if not bool(((targets == 0) | (targets == 1)).all()):
            raise ValueError(f"task {self.task}: targets must be 0 or 1")
        self.auroc.update(logits, targets)
        self.n += logits.shape[0]
        if not self.binary:
            if logits.shape[1] != self.n_labels:
                raise ValueError(f"task {self.task}: {logits.shape[1]} logit columns for {self.n_labels} labels")
            self.diversity_sum += diversity_batch_sum(logits)
            self.novelty_sum += novelty_batch_sum(logits, self.weights)

    @torch.no_grad()
    def compute(self) -> dict:
        if self.n == 0:
            raise ValueError("TaskMetrics.compute() before any update()")
        with warnings.catch_warnings():
            # a label without positives scores 0 by design; run.py reports how many there are
            warnings.filterwarnings("ignore", message=".*(positive|negative) samples.*")
            auroc = float(self.auroc.compute().item())
        result = {"auroc": auroc, "diversity": None, "novelty": None}
        if not self.binary:
            n = torch.tensor(self.n + EPS, dtype=torch.float32, device=self.device)
            diversity = self.diversity_sum / n / math.log2(self.n_labels)
            novelty = (1 - self.novelty_sum / n) ** NOVELTY_EXPONENT
            result["diversity"] = float(diversity.item())
            result["novelty"] = float(novelty.item())
        result["score"] = task_score(self.task, auroc, result["diversity"], result["novelty"])
        self.reset()
        return result


def compute_metrics(task: str, logits, targets, popularity=None, batch_size: int | None = 128) -> dict:
    """All rows at once, fed in `batch_size` chunks (None: a single update)."""
    logits = _as_2d(_as_tensor(logits, torch.float32))
    targets = _as_2d(_as_targets(targets))
    metrics = TaskMetrics(task, popularity)
    step = batch_size or max(len(logits), 1)
    for start in range(0, len(logits), step):
        metrics.update(logits[start : start + step], targets[start : start + step])
    return metrics.compute()
