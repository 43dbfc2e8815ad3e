"""The `evaluate@<profile>` stage: score one embedding on the six tasks -> `metrics/<profile>.json`.

    python -m ubp evaluate <profile>

Reads params.yaml's `eval` section (network size and training settings), the embedding in
`embeddings/<profile>/` and the labels the targets stage wrote in `data/targets/labels/<task>.npz`.
A profile the embed stage skipped (`SKIPPED.txt`) gets a metrics file that says so, with no scores.

`eval.workers` > 1 trains the six tasks' networks in that many spawned processes, each with
`eval.threads` torch threads (the default 2 x 1 on 2 cores: `features` took 20.7 s instead of 26.2 s
with 1 x 2, because these small networks use a second thread poorly). Each task is seeded on its own, so its scores do not
depend on which process trains it or in what order; they do depend, in the last digits of AUROC,
on the thread count (torch sums in another order).
"""
from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ubp import schema
from ubp.evaluate.protocol import SCORE_DECIMALS, ProtocolConfig, align, evaluate_task
from ubp.io import UbpError, load_npy, save_json
from ubp.params import load_params, profile_dir, profile_names, section

log = logging.getLogger(__name__)

SKIPPED_FILE = "SKIPPED.txt"
LABEL_KEYS = ("client_ids", "y_train", "y_validation")


def labels_path(targets_dir: Path, task: str) -> Path:
    return Path(targets_dir) / schema.LABELS_SUBDIR / f"{task}.npz"


def load_task_labels(targets_dir: Path, task: str) -> dict:
    """One task's client ids, train/validation label matrices and, for propensity tasks, popularity."""
    path = labels_path(targets_dir, task)
    if not path.exists():
        raise UbpError(f"{path}: file not found (run the targets stage first)")
    with np.load(path, allow_pickle=False) as npz:
        labels = {key: npz[key] for key in npz.files}
    needed = LABEL_KEYS + (() if task in schema.BINARY_TASKS else ("popularity",))
    missing = [key for key in needed if key not in labels]
    if missing:
        raise UbpError(f"{path}: missing array(s) {', '.join(missing)}")
    n = len(labels["client_ids"])
    for key in ("y_train", "y_validation"):
        if labels[key].ndim != 2 or labels[key].shape[0] != n:
            raise UbpError(f"{path}: {key} has shape {labels[key].shape}, expected ({n}, n_labels)")
    if "popularity" in labels and len(labels["popularity"]) != labels["y_train"].shape[1]:
        raise UbpError(f"{path}: {len(labels['popularity'])} popularity values for {labels['y_train'].shape[1]} labels")
    return labels


def load_embedding(profile_dir: Path, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """client_ids + embeddings of a profile, checked like a submission (SPEC §7)."""
    ids_path, emb_path = profile_dir / "client_ids.npy", profile_dir / "embeddings.npy"
    ids, emb = load_npy(ids_path), load_npy(emb_path)
    if ids.ndim != 1 or ids.dtype != np.int64:
        raise UbpError(f"{ids_path}: expected a 1-D int64 array, got {ids.dtype} with shape {ids.shape}")
    if emb.ndim != 2 or not np.issubdtype(emb.dtype, np.floating):
        raise UbpError(f"{emb_path}: expected a 2-D float array, got {emb.dtype} with shape {emb.shape}")
    if len(emb) != len(ids):
        raise UbpError(f"{emb_path}: {len(emb)} rows for {len(ids)} client ids")
    if emb.shape[1] > schema.MAX_EMBEDDING_DIM:
        raise UbpError(f"{emb_path}: {emb.shape[1]} dimensions, the limit is {schema.MAX_EMBEDDING_DIM}")
    if not np.isfinite(emb).all():
        bad = int((~np.isfinite(emb)).any(axis=1).sum())
        raise UbpError(f"{emb_path}: NaN or inf in {bad} rows")
    unique = np.unique(ids)
    if len(unique) != len(ids):
        raise UbpError(f"{ids_path}: {len(ids) - len(unique)} duplicate client ids")
    missing, extra = np.setdiff1d(relevant, unique), np.setdiff1d(unique, relevant)
    if len(missing) or len(extra):
        example = f"missing e.g. {missing[0]}" if len(missing) else f"unexpected e.g. {extra[0]}"
        raise UbpError(f"{ids_path}: the ids must be exactly the {len(relevant)} relevant clients "
                       f"({len(missing)} missing, {len(extra)} not relevant; {example})")
    return ids, emb


def evaluate_profile(profile: str, eval_params: dict, embeddings_dir: Path = schema.EMBEDDINGS_DIR,
                     targets_dir: Path = schema.TARGETS_DIR) -> dict:
    """Score `profile` on the six tasks; returns the metrics dict written by `main`."""
    size = eval_params.get("profile", "default")
    config = ProtocolConfig.from_params(eval_params, size)
    profile_dir = Path(embeddings_dir) / profile
    result = {"profile": profile, "eval_profile": size}
    if (profile_dir / SKIPPED_FILE).exists():
        reason = (profile_dir / SKIPPED_FILE).read_text().strip()
        log.info("%s: skipped by the embed stage (%s)", profile, reason)
        return {**result, "skipped": reason or "skipped"}

    started = time.perf_counter()
    labels = {task: load_task_labels(targets_dir, task) for task in schema.TASKS}
    # Every non-churn task covers all relevant clients (churn only the active ones).
    relevant = np.unique(np.concatenate([labels[t]["client_ids"] for t in schema.TASKS]))
    ids, emb = load_embedding(profile_dir, relevant)
    log.info("%s: %d clients x %d dims; network %s (thin %d, wide %d), %d epochs, device %s",
             profile, len(ids), emb.shape[1], size, config.thin, config.wide, config.epochs, config.device)

    aligned = {t: align(lab["client_ids"], lab["y_train"], lab["y_validation"], ids, emb) for t, lab in labels.items()}
    total = sum(len(a[0]) for a in aligned.values()) * config.epochs
    jobs = {task: (task, *aligned[task][1:], labels[task].get("popularity")) for task in schema.TASKS}
    workers = eval_params.get("workers")
    workers = 1 if workers is None else workers  # absent, or emptied by `dvc exp run -S eval.workers=null`
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UbpError(f"params.yaml: eval.workers must be a whole number >= 1, got {eval_params.get('workers')!r}")
    outs = {}
    bar = tqdm(total=total, desc=f"evaluate {profile}", unit="sample", leave=False, disable=None)
    with bar, logging_redirect_tqdm():
        if workers == 1:
            for task, job in jobs.items():
                outs[task] = evaluate_task(*job, config, progress=bar.update)
                _log_task(profile, task, outs[task])
        else:
            # spawn, not fork: a forked copy of a process whose torch threads already ran can hang.
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
                running = {pool.submit(evaluate_task, *job, config): task for task, job in jobs.items()}
                for done in as_completed(running):
                    task = running[done]
                    outs[task] = done.result()
                    bar.update(len(jobs[task][1]) * config.epochs)
                    _log_task(profile, task, outs[task])
    tasks = {task: _task_entry(task, outs[task]) for task in schema.TASKS}  # always in task order
    result["sum"] = round(sum(entry["score"] for entry in tasks.values()), SCORE_DECIMALS)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["tasks"] = tasks
    return result


def _log_task(profile: str, task: str, out: dict) -> None:
    log.info("%s %s: score %.4f (epoch %d; auroc %.4f), %d clients, %d labels without positive, %.1f s",
             profile, task, out["score"], out["best_epoch"], out["auroc"], out["n_clients"],
             out["labels_without_positive"], out["seconds"])


def _task_entry(task: str, out: dict) -> dict:
    entry = {"score": out["score"], "auroc": round(out["auroc"], 6)}
    if task not in schema.BINARY_TASKS:
        entry["diversity"] = round(out["diversity"], 6)
        entry["novelty"] = round(out["novelty"], 6)
    for key in ("best_epoch", "n_clients", "n_labels", "labels_without_positive", "seconds"):
        entry[key] = out[key]
    return entry


def embeddings_root(params: dict, profile: str) -> Path:
    """The directory holding `<profile>/`: embeddings/ or combined/ as params.yaml says; a name that is
    not a profile of params.yaml is an embedding put in embeddings/<name> by hand (made elsewhere)."""
    return profile_dir(params, profile).parent if profile in profile_names(params) else schema.EMBEDDINGS_DIR


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise UbpError("usage: python -m ubp evaluate <profile>")
    profile = argv[0]
    params = load_params()
    eval_params = section(params, "eval")
    metrics = evaluate_profile(profile, eval_params, embeddings_root(params, profile))
    out = schema.METRICS_DIR / f"{profile}.json"
    save_json(out, metrics)
    log.info("%s: sum %s -> %s", profile, metrics.get("sum", "skipped"), out)
    return 0
