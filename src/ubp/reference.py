"""The task-specific reference: LightGBM trained per task on the handcrafted feature table.

    python -m ubp reference

Universal profiles are meant to match "a separate model per task". This stage builds that
baseline under exactly the downstream protocol's windows and metrics (SPEC §4-§6): for each task
it trains on the train-window labels of the task's clients (`load_task_labels`: relevant clients,
churn only the active ones, in the label files' order), predicts the same clients, and scores the
predictions against their validation-window labels with `compute_metrics` (torchmetrics AUROC in
128-row batches, diversity, novelty). The predictions are LightGBM's raw margins (log-odds), used
as the network's logits would be, so diversity and novelty see sigmoid(margin).
The result goes to `metrics/lightgbm.json` in the evaluator's layout, with `"kind": "reference"`
(it is not an embedding profile; `best_epoch` is always 0).

Models. Binary tasks: one model. Propensity tasks (L = 100 labels): one binary model per label,
i.e. up to 4 x 100 models. That is affordable without any reduction: small, strongly regularised
trees (`num_leaves` 7, `min_child_samples` 50, `lambda_l2` 10, `max_bin` 63) and a fixed 60 rounds
at learning rate 0.1, ~0.2 s per model on two threads at 12,000 clients x 283 features (the features are binned once
per task and shared by its labels' models), about 1.5 minutes for the whole stage.

* No early stopping by default. It is available (`early_stopping_rounds` > 0) and never looks at
  the validation window: per label, a seeded, stratified `holdout_fraction` of the task's clients
  (their *train-window* labels) is held out, a model is trained on the rest with binary log-loss
  early stopping on the held-out part (at most `n_estimators` rounds), then refitted on all the
  task's clients with the best number of rounds; a label with fewer than `min_positives_holdout`
  positives gets `fallback_rounds` rounds instead. Measured on the default synthetic data
  (20 of the 100 labels of propensity_sku / propensity_price, validation macro AUROC), it stopped
  far too early on these rare labels (median 20-40 rounds; log-loss or AUC as the stopping metric
  alike) and scored 0.74-0.79 / 0.79-0.81 against 0.81 / 0.81 for the fixed 60 rounds, while
  taking longer (two fits per label).
* A label with no positive in the train window (typical for new SKUs) gets a constant margin
  log(0.5 / (n + 0.5)) (all positive: its negative); its AUROC is then 0.5, not a guess.

Deterministic: fixed seeds (per label, derived from `seed`), `deterministic`, `force_row_wise`,
`num_threads` from params (params.yaml: 2, since `dvc repro` runs one stage at a time; on the default data
the stage took 171 s on 2 threads vs 315 s on 1, task scores equal to 4 decimals, AUROCs to 5).
Use 1 thread on a shared machine: with 2 OpenMP threads on a busy 2-core CPU LightGBM spin-waits
and one 100-round model took 34 s instead of 1 s.
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ubp import schema
from ubp.config import as_dict
from ubp.evaluate.metrics import compute_metrics, is_binary, labels_without_positive
from ubp.evaluate.protocol import SCORE_DECIMALS
from ubp.evaluate.run import load_task_labels
from ubp.features.table import feature_matrix, load_features
from ubp.io import UbpError, save_json
from ubp.params import load_params, section_config

log = logging.getLogger("ubp.reference")

NAME = "lightgbm"
EVAL_PROFILE = "lightgbm (task-specific, not a profile)"
FEATURES_FILE = schema.FEATURES_DIR / "features.parquet"
BATCH_SIZE = 128  # validation batches, as the downstream evaluator

@dataclass(frozen=True)
class ReferenceConfig:
    """params.yaml's `reference` section, the only home of its defaults (`ReferenceConfig.from_params`)."""
    n_estimators: int = 60  # rounds per model (with early stopping: the most rounds)
    learning_rate: float = 0.1
    num_leaves: int = 7
    min_child_samples: int = 50
    lambda_l2: float = 10.0
    feature_fraction: float = 0.8
    max_bin: int = 63
    early_stopping_rounds: int = 0  # 0: no early stopping, n_estimators rounds for every model
    holdout_fraction: float = 0.2  # of the task's clients (train-window labels), for early stopping
    min_positives_holdout: int = 5  # fewer positives: no holdout, fallback_rounds rounds
    fallback_rounds: int = 50
    threads: int = 1
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.holdout_fraction < 1:
            raise UbpError("params.yaml: reference.holdout_fraction must lie strictly between 0 and 1")

    @classmethod
    def from_params(cls, params: Mapping) -> "ReferenceConfig":
        return section_config(params, cls, "reference")


def _lgb_params(cfg: ReferenceConfig, seed: int) -> dict:
    return {
        "objective": "binary",
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_child_samples": cfg.min_child_samples,
        "lambda_l2": cfg.lambda_l2,
        "feature_fraction": cfg.feature_fraction,
        "max_bin": cfg.max_bin,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": cfg.threads,
        "verbosity": -1,
    }


def _dataset_params(cfg: ReferenceConfig) -> dict:
    """How every Dataset bins its features: the shared one of task_logits and each label's own alike."""
    return {"max_bin": cfg.max_bin, "verbosity": -1}


def _holdout_mask(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified random `fraction` of the rows (positives and negatives held out alike)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    for value in (0, 1):
        rows = np.flatnonzero(y == value)
        n_out = int(round(fraction * len(rows)))
        if n_out:
            mask[rng.choice(rows, size=n_out, replace=False)] = True
    return mask


def constant_margin(n_positive: int, n: int) -> float:
    """The margin given to every client for a label that is constant in the train window."""
    low = math.log(0.5 / (n + 0.5))
    return -low if n_positive == n else low


def fit_label(x: np.ndarray, y: np.ndarray, cfg: ReferenceConfig, seed: int, binned=None) -> tuple[np.ndarray, int]:
    """Train one binary model on (x, y) (train-window labels only); its margins on x and its rounds.

    `binned`: an `lgb.Dataset` of `x` already constructed (its bins are the same for every label), used
    in place of a new one when there is no early stopping: its label is replaced by `y`.
    """
    import lightgbm as lgb

    y = (np.asarray(y) > 0).astype(np.float32)
    n_pos = int(y.sum())
    if n_pos in (0, len(y)):
        return np.full(len(y), constant_margin(n_pos, len(y)), dtype=np.float32), 0
    params = _lgb_params(cfg, seed)
    rounds = cfg.n_estimators
    patience = cfg.early_stopping_rounds
    if patience > 0:
        rounds = cfg.fallback_rounds
        held = _holdout_mask(y, cfg.holdout_fraction, seed)
        if min(n_pos, len(y) - n_pos) >= cfg.min_positives_holdout and 0 < y[held].sum() < y[~held].sum():
            fit = lgb.Dataset(x[~held], label=y[~held], params=_dataset_params(cfg))
            stop = lgb.Dataset(x[held], label=y[held], reference=fit)
            booster = lgb.train({**params, "metric": "binary_logloss"}, fit, num_boost_round=cfg.n_estimators,
                                valid_sets=[stop], callbacks=[lgb.early_stopping(patience, verbose=False)])
            rounds = max(int(booster.best_iteration or booster.current_iteration()), 1)
    if binned is not None and patience <= 0:
        data = binned
        data.set_label(y)
    else:
        data = lgb.Dataset(x, label=y, params=_dataset_params(cfg))
    booster = lgb.train(params, data, num_boost_round=rounds)
    return booster.predict(x, raw_score=True).astype(np.float32), rounds


def task_logits(x: np.ndarray, y_train: np.ndarray, cfg: ReferenceConfig,
                seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Margins (n_clients x n_labels) of one model per label column, and each model's rounds.

    Only the train-window labels go in: the validation window never reaches this function.
    Without early stopping the features are binned once for all the task's labels (binning reads
    no label); on the default data that halves the stage's time (0.41 -> 0.22 s per model).
    """
    import lightgbm as lgb

    y_train = np.asarray(y_train).reshape(len(y_train), -1)
    x = np.asarray(x, dtype=np.float32)
    out = np.empty(y_train.shape, dtype=np.float32)
    rounds = []
    binned = None
    if cfg.early_stopping_rounds <= 0:
        binned = lgb.Dataset(x, label=np.zeros(len(x), dtype=np.float32), free_raw_data=False,
                             params=_dataset_params(cfg)).construct()
    for j in range(y_train.shape[1]):
        out[:, j], r = fit_label(x, y_train[:, j], cfg, seed=seed * 1_000 + j, binned=binned)
        rounds.append(r)
    return out, rounds


def _task_rows(table_ids: np.ndarray, task_ids: np.ndarray) -> np.ndarray:
    """Row index into the feature table of each task client, in the task's order."""
    order = np.argsort(table_ids)
    pos = np.searchsorted(table_ids[order], task_ids)
    pos = np.clip(pos, 0, len(order) - 1)
    rows = order[pos]
    if not np.array_equal(table_ids[rows], task_ids):
        raise UbpError("feature table: some task clients have no feature row (re-run `python -m ubp features`)")
    return rows


def run(cfg: ReferenceConfig, features_path: Path = FEATURES_FILE, targets_dir: Path = schema.TARGETS_DIR,
        metrics_dir: Path = schema.METRICS_DIR) -> dict:
    """Train and score the reference on the six tasks; writes and returns `metrics/lightgbm.json`."""
    started = time.perf_counter()
    labels = {task: load_task_labels(targets_dir, task) for task in schema.TASKS}
    relevant = np.unique(np.concatenate([labels[t]["client_ids"] for t in schema.TASKS]))
    table = load_features(features_path, relevant)
    table_ids = table[schema.CLIENT_ID].to_numpy(np.int64)
    x_all = feature_matrix(table)
    log.info("reference: %d clients x %d features; LightGBM per label, %d threads", len(table), x_all.shape[1],
             cfg.threads)

    tasks = {}
    for t_index, task in enumerate(schema.TASKS):
        task_started = time.perf_counter()
        lab = labels[task]
        x = x_all[_task_rows(table_ids, np.asarray(lab["client_ids"], dtype=np.int64))]
        logits, rounds = task_logits(x, lab["y_train"], cfg, seed=cfg.seed * 100 + t_index)
        y_val = np.asarray(lab["y_validation"]).reshape(len(x), -1)
        m = compute_metrics(task, logits, y_val, lab.get("popularity"), batch_size=BATCH_SIZE)
        entry = {"score": round(m["score"], SCORE_DECIMALS), "auroc": round(m["auroc"], 6)}
        if not is_binary(task):
            entry["diversity"] = round(m["diversity"], 6)
            entry["novelty"] = round(m["novelty"], 6)
        fitted = [r for r in rounds if r > 0]
        entry.update({
            "best_epoch": 0,
            "n_clients": int(len(x)),
            "n_labels": int(y_val.shape[1]),
            "labels_without_positive": labels_without_positive(y_val),
            "seconds": round(time.perf_counter() - task_started, 2),
            "models": len(fitted),
            "constant_labels": len(rounds) - len(fitted),
            "median_rounds": float(np.median(fitted)) if fitted else 0.0,
        })
        tasks[task] = entry
        log.info("reference %s: score %.4f (auroc %.4f), %d models (median %g rounds), %d constant labels, %.1f s",
                 task, entry["score"], m["auroc"], entry["models"], entry["median_rounds"],
                 entry["constant_labels"], entry["seconds"])

    result = {
        "profile": NAME,
        "kind": "reference",
        "eval_profile": EVAL_PROFILE,
        "sum": round(sum(e["score"] for e in tasks.values()), SCORE_DECIMALS),
        "seconds": round(time.perf_counter() - started, 1),
        "settings": as_dict(cfg),
        "tasks": tasks,
    }
    out = Path(metrics_dir) / f"{NAME}.json"
    save_json(out, result)
    log.info("reference: sum %.4f in %.0f s -> %s", result["sum"], result["seconds"], out)
    return result


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="python -m ubp reference", description=__doc__.split("\n\n")[0]).parse_args(argv)
    run(ReferenceConfig.from_params(load_params()))  # a typo stops here, before any work
    return 0
