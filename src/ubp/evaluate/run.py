"""The `evaluate@<profile>` stage: score one embedding on the six tasks -> `metrics/<profile>.json`.

    python -m ubp evaluate <profile>

Reads params.yaml's `eval` section (network size and training settings), the embedding in
`embeddings/<profile>/` and the labels the targets stage wrote in `data/targets/labels/<task>.npz`.
A profile the embed stage skipped (`SKIPPED.txt`) gets a metrics file that says so, with no scores.

The embedding is checked and written once as float32 to a temporary .npy file (under TMPDIR),
with each task's row order and labels beside it; the tasks' networks read it a block at a time, so
neither this process nor a worker ever holds a copy of the whole embedding. `eval.workers` > 1
trains the six tasks' networks in that many spawned processes, each with `eval.threads` torch
threads (default 2 x 1 on 2 cores: these small networks use a second thread poorly). Each task is
seeded on its own, so its scores do not depend on which process trains it or in what order; they
do depend, in the last digits of AUROC, on the thread count (torch sums in another order).

`eval.sample_clients: N` scores a seeded sample of N relevant clients instead of all (drawn from
`eval.seed`, the same for every profile; each task keeps the sampled clients it has): an evaluation
costs about N / all of the full one, for everyday comparisons at the real data's size. Its scores
compare with each other, not with a run on all clients (reports/bench/eval_compact_1m.md).
"""
from __future__ import annotations

import logging
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ubp import profile_store as store
from ubp import schema
from ubp.evaluate.protocol import (BLOCK_BYTES, SCORE_DECIMALS, EvalConfig, ProtocolConfig, Rows, align_rows,
                                   evaluate_task)
from ubp.io import UbpError, save_json
from ubp.params import load_params, profile_dir, profile_names

log = logging.getLogger(__name__)

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


def load_task_ids(targets_dir: Path, task: str) -> np.ndarray:
    """A task's client ids alone (the label matrices stay on disk until the task's turn)."""
    path = labels_path(targets_dir, task)
    if not path.exists():
        raise UbpError(f"{path}: file not found (run the targets stage first)")
    with np.load(path, allow_pickle=False) as npz:  # members load lazily, by key
        if "client_ids" not in npz.files:
            raise UbpError(f"{path}: missing array(s) client_ids")
        return npz["client_ids"]


def write_float32(emb_path: Path, out: Path, rows: np.ndarray | None = None) -> None:
    """The embedding (its `rows` only, when given) cast to float32 (as the official pipeline feeds
    it) into the .npy file `out`, a block at a time: neither copy is ever held in memory whole.
    NaN or inf -> UbpError."""
    n, width = store.open_matrix(emb_path).shape
    n = n if rows is None else len(rows)
    target = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, width))
    offset = target.offset
    del target  # written below with plain writes, which do not map the file into this process
    step = max(1, BLOCK_BYTES // (4 * max(width, 1)))
    bad = 0
    with open(out, "r+b") as f:
        f.seek(offset)
        for start in range(0, n, step):
            block = Rows(emb_path, rows).block(start, min(start + step, n))
            bad += int((~np.isfinite(block)).any(axis=1).sum())
            block.tofile(f)
    if bad:
        raise UbpError(f"{emb_path}: NaN or inf in {bad} rows")


def write_task(targets_dir: Path, task: str, ids: np.ndarray, out: Path, sampled: bool = False) -> int:
    """Checks the task's labels and writes what its worker reads into the directory `out`: the rows
    of the embedding in the task's client order (none if that is every row in order), the label
    matrices in that order and the popularity. `sampled`: `ids` are a sample of the relevant
    clients, and the task keeps those of its clients. Returns the number of clients."""
    labels = load_task_labels(targets_dir, task)
    if sampled:
        keep = np.isin(labels["client_ids"], ids)
        labels = {**labels, **{key: labels[key][keep] for key in LABEL_KEYS}}
    rows, label_rows = align_rows(labels["client_ids"], ids)
    out.mkdir()
    if not np.array_equal(rows, np.arange(len(ids))):  # churn: a subset; the others: every row in order
        np.save(out / "rows.npy", rows)
    for key in ("y_train", "y_validation"):
        np.save(out / f"{key}.npy", labels[key][label_rows])
    if "popularity" in labels:
        np.save(out / "popularity.npy", labels["popularity"])
    return len(rows)


def run_task(task: str, x_path: Path, task_dir: Path, config: ProtocolConfig, progress=None) -> dict:
    """One task, from the files `write_float32` and `write_task` wrote (in a worker or in-process)."""
    rows = np.load(task_dir / "rows.npy") if (task_dir / "rows.npy").exists() else None
    popularity = np.load(task_dir / "popularity.npy") if (task_dir / "popularity.npy").exists() else None
    return evaluate_task(task, Rows(x_path, rows), np.load(task_dir / "y_train.npy"),
                         np.load(task_dir / "y_validation.npy"), popularity, config, progress=progress)


def sample_rows(ids: np.ndarray, size: int | None, seed: int) -> np.ndarray | None:
    """The positions in `ids` (increasing, so in submitted order) of a seeded sample of `size` of
    them, or None for all (size None or at least their number). The sample is drawn from the sorted
    ids, so it is the same clients whatever order a profile stores them in."""
    if size is None or size >= len(ids):
        return None
    rng = np.random.default_rng([int(seed), 1281])  # own stream, apart from the networks' draws
    chosen = rng.choice(np.sort(ids), size=int(size), replace=False)
    return np.flatnonzero(np.isin(ids, chosen))


def evaluate_profile(profile: str, cfg: EvalConfig, embeddings_dir: Path = schema.EMBEDDINGS_DIR,
                     targets_dir: Path = schema.TARGETS_DIR) -> dict:
    """Score `profile` on the six tasks; returns the metrics dict written by `main`."""
    config = cfg.protocol()
    profile_dir = Path(embeddings_dir) / profile
    result = {"profile": profile, "eval_profile": cfg.profile}
    reason = store.skipped(profile_dir)
    if reason is not None:
        log.info("%s: skipped by the embed stage (%s)", profile, reason)
        return {**result, "skipped": reason}
    workers = cfg.workers or 1  # None: emptied by `dvc exp run -S eval.workers=null`

    started = time.perf_counter()
    # Every non-churn task covers all relevant clients (churn only the active ones).
    relevant = np.unique(np.concatenate([load_task_ids(targets_dir, t) for t in schema.TASKS]))
    stored = store.open_profile(profile_dir, relevant)  # NaN/inf: counted by write_float32
    ids, (n, width) = stored.client_ids, stored.shape
    sample = sample_rows(ids, cfg.sample_clients, cfg.seed)
    log.info("%s: %d clients x %d dims%s; network %s (thin %d, wide %d), %d epochs, device %s",
             profile, n, width, "" if sample is None else f", scored on a seeded sample of {len(sample)}",
             cfg.profile, config.thin, config.wide, config.epochs, config.device)
    if sample is not None:
        result["sample_clients"] = int(len(sample))
        ids = ids[sample]
    # One float32 copy on disk (TMPDIR) that every worker reads, plus each task's rows and labels:
    # the parent never holds an aligned copy of the embedding.
    with tempfile.TemporaryDirectory(prefix="ubp-evaluate-") as tmp:
        x_path = Path(tmp) / "embeddings.npy"
        write_float32(profile_dir / store.EMBEDDINGS, x_path, sample)
        sizes = {task: write_task(targets_dir, task, ids, Path(tmp) / task, sample is not None)
                 for task in schema.TASKS}
        outs = _run_tasks(profile, x_path, Path(tmp), sizes, config, workers)
    tasks = {task: _task_entry(task, outs[task]) for task in schema.TASKS}  # always in task order
    result["sum"] = round(sum(entry["score"] for entry in tasks.values()), SCORE_DECIMALS)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["tasks"] = tasks
    return result


def _run_tasks(profile: str, x_path: Path, tmp: Path, sizes: dict[str, int], config: ProtocolConfig,
               workers: int) -> dict[str, dict]:
    outs = {}
    total = sum(sizes.values()) * config.epochs
    bar = tqdm(total=total, desc=f"evaluate {profile}", unit="sample", leave=False, disable=None)
    with bar, logging_redirect_tqdm():
        if workers == 1:
            for task in sizes:
                outs[task] = run_task(task, x_path, tmp / task, config, progress=bar.update)
                _log_task(profile, task, outs[task])
        else:
            # spawn, not fork: a forked copy of a process whose torch threads already ran can hang.
            with ProcessPoolExecutor(max_workers=min(workers, len(sizes)),
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
                running = {pool.submit(run_task, task, x_path, tmp / task, config): task for task in sizes}
                for done in as_completed(running):
                    task = running[done]
                    outs[task] = done.result()
                    bar.update(sizes[task] * config.epochs)
                    _log_task(profile, task, outs[task])
    return outs


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
    cfg = EvalConfig.from_params(params)  # a typo stops here, before any work
    metrics = evaluate_profile(profile, cfg, embeddings_root(params, profile))
    out = schema.METRICS_DIR / f"{profile}.json"
    save_json(out, metrics)
    log.info("%s: sum %s -> %s", profile, metrics.get("sum", "skipped"), out)
    return 0
