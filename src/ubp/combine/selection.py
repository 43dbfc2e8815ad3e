"""`python -m ubp select`: which profiles the ensemble should combine, chosen on the train window's open tasks only.

    python -m ubp select [--threads 1]   # -> reports/bench/ensemble_selection.md and .json

Greedy forward selection, then backward pruning (ensemble selection as in Caruana et al. 2004):
start from nothing; at each step add the candidate whose addition scores best, while that improves
the objective by more than `min_gain`; then, while dropping one chosen source scores at least as
well as keeping it, drop the one whose removal scores best.

A candidate set is scored by the downstream protocol itself (`ubp.evaluate.protocol`: params.yaml's
`eval`) on an inner split of the TRAIN window, on the three open tasks (churn, category and SKU
propensity) only: the relevant clients are split into `folds` seeded folds; per fold and task a
fresh network is trained on the other folds' train-window labels and scored on the fold's; a task's
inner score is the mean over folds (and `repeats` re-drawn splits, seeds seed, seed+1, ...), and the
objective is their sum. The labels are built from the train window and input events alone
(`ubp.inner_labels`): neither the validation window nor the hidden tasks (conversion, new SKU,
price) choose anything, so they stay an honest measure of the chosen ensemble. Every set uses the
same folds and network seed, so differences between sets are paired. The objective is noisy
(`reports/bench/ensemble_selection.md`): `min_gain` guards against noise, `repeats` averages it away.

Candidates: every stored profile of params.yaml's `models` (`embeddings/<profile>/`) except
`selection.exclude` (`oracle`: the generator's truth, a ceiling, not a method), skipped profiles and
combined ones; or `selection.candidates`. Each is normalised once exactly as in the ensemble
(`ubp.combine.blocks.block`, with its `ensemble.per_source` settings, and `ensemble.balance`); a set
is its blocks side by side in candidate order; sets wider than `ensemble.max_dim` are not tried.
Cost: a scoring trains 3 tasks x `folds` x `repeats` networks (`eval.workers` at a time); forward
selection over C candidates scores at most C + (C-1) + ... sets (no set twice), `max_sources`
bounds its steps. At the real data's size, `sample_clients: N` scores every set on one seeded
sample of N clients (the cost is linear in the clients; only the sample's rows of each candidate
are read).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ubp import profile_store as store
from ubp import schema
from ubp.combine import ensemble
from ubp.combine.blocks import block
from ubp.combine.selection_report import earlier, markdown
from ubp.combine.sources import Loaded, Source, SourceSettings, stored
from ubp.config import as_dict, build
from ubp.data.targets import TargetsConfig
from ubp.evaluate.protocol import SCORE_DECIMALS, EvalConfig, ProtocolConfig, train_and_score
from ubp.features.build import FeaturesConfig
from ubp.inner_labels import open_train_labels
from ubp.io import UbpError, save_json, save_text
from ubp.models import available_methods, traits
from ubp.params import load_params

log = logging.getLogger("ubp.selection")

REPORT = schema.BENCH_DIR / "ensemble_selection"
# What the inner split scores: the open tasks. The hidden ones (conversion, new SKU, price) only measure.
TASKS = schema.OPEN_TASKS


@dataclass(frozen=True)
class Config:
    """params.yaml's `selection:` section (the only home of its defaults)."""
    candidates: tuple[str, ...] | None = None  # None: every stored base profile but `exclude`
    exclude: tuple[str, ...] = ("oracle",)  # the generator's truth is a ceiling, not a method
    folds: int = 2  # of the inner split
    repeats: int = 1  # re-drawn inner splits (seeds seed, seed + 1, ...)
    min_gain: float = 0.01  # a source is added only if the objective gains more than this
    max_sources: int | None = None  # at most this many forward steps
    sample_clients: int | None = None  # score on a seeded sample of this many clients (None: all)
    seed: int = 0

    def __post_init__(self):
        if self.folds < 2 or self.repeats < 1:
            raise UbpError(f"params.yaml: selection needs folds >= 2 and repeats >= 1, got {self.folds} and "
                           f"{self.repeats}")
        for key in ("max_sources", "sample_clients"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise UbpError(f"params.yaml: selection.{key} must be a whole number >= 1 or null, "
                               f"got {getattr(self, key)}")


def settings(params: dict) -> tuple[Config, ensemble.Config]:
    """The `selection:` and `ensemble:` sections, typed and checked before any work."""
    return (build(Config, params.get("selection"), "selection"),
            build(ensemble.Config, params.get("ensemble"), "ensemble"))


# --- one task, one fold ----------------------------------------------------------------------------

def fit_and_score(task: str, x_fit, y_fit, x_score, y_score, popularity, config: ProtocolConfig) -> float:
    """The protocol's network trained on (x_fit, y_fit), scored on (x_score, y_score) after every
    epoch; the best epoch's score, as `evaluate_task` does with the validation window."""
    return max(epoch["score"] for epoch in train_and_score(task, x_fit, y_fit, x_score, y_score, popularity, config))


class InnerScorer:
    """Scores an embedding of the relevant clients on the inner split of the train window, on the
    open tasks (`TASKS`) only: `labels` must hold exactly them ({task: {client_ids, y_train[, popularity]}})."""

    def __init__(self, labels: dict[str, dict], config: ProtocolConfig, folds: int = 2, seed: int = 0,
                 repeats: int = 1, workers: int = 1):
        if folds < 2 or repeats < 1:
            raise UbpError(f"params.yaml: selection needs folds >= 2 and repeats >= 1, got {folds} and {repeats}")
        if set(labels) != set(TASKS):
            raise UbpError(f"selection: the inner split scores exactly the open tasks ({', '.join(TASKS)}), got "
                           f"{', '.join(labels) or 'none'}: the hidden tasks only measure, they never choose")
        for task, lab in labels.items():
            if lab["y_train"].ndim != 2 or len(lab["y_train"]) != len(lab["client_ids"]):
                raise UbpError(f"selection: {task}'s y_train has shape {lab['y_train'].shape}, "
                               f"expected ({len(lab['client_ids'])}, labels)")
        self.labels, self.config, self.folds, self.workers = labels, config, int(folds), max(1, int(workers))
        # Every non-churn task covers all relevant clients (churn only the active ones), as in evaluate.
        self.client_ids = np.unique(np.concatenate([lab["client_ids"] for lab in labels.values()]))
        n = len(self.client_ids)
        folds_of = [np.random.default_rng([int(seed) + r, 1278]).permutation(n) % self.folds for r in range(repeats)]
        self.rows, self.fold = {}, {}
        for task, lab in labels.items():
            rows = np.searchsorted(self.client_ids, lab["client_ids"])  # task label row -> embedding row
            self.rows[task], self.fold[task] = rows, [fold[rows] for fold in folds_of]

    def score(self, x: np.ndarray) -> dict[str, float]:
        """Per task, the mean over repeats and folds of the inner score; one row of x per self.client_ids.
        The networks (tasks x repeats x folds) train in `workers` processes when there are several: each
        is seeded on its own, so the scores are the same as in one process."""
        jobs = ((task, x[rows[fold != k]], y[fold != k], x[rows[fold == k]], y[fold == k],
                 self.labels[task].get("popularity"), self.config)
                for task, rows, y in ((t, self.rows[t], self.labels[t]["y_train"]) for t in TASKS)
                for fold in self.fold[task] for k in range(self.folds))  # one fold's copy of x at a time
        if self.workers == 1:
            scores = [fit_and_score(*job) for job in jobs]
        else:
            # spawn, not fork, as the evaluate stage: a forked copy of a process whose torch threads ran can hang
            with ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                scores = list(pool.map(fit_and_score, *zip(*jobs)))
        per_task = len(scores) // len(TASKS)
        return {task: round(float(np.mean(scores[i * per_task:(i + 1) * per_task])), SCORE_DECIMALS)
                for i, task in enumerate(TASKS)}


def sample_labels(labels: dict[str, dict], size: int | None, seed: int = 0) -> dict[str, dict]:
    """The labels of a seeded sample of `size` of the tasks' clients (None, or at least their number: all)."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise UbpError(f"params.yaml: selection.sample_clients must be a whole number >= 1 or null, got {size!r}")
    client_ids = np.unique(np.concatenate([lab["client_ids"] for lab in labels.values()]))
    if size is None or size >= len(client_ids):
        return labels
    chosen = np.sort(np.random.default_rng([int(seed), 1279]).choice(client_ids, size=int(size), replace=False))
    sampled = {}
    for task, lab in labels.items():
        keep = np.isin(lab["client_ids"], chosen)
        sampled[task] = {**lab, "client_ids": lab["client_ids"][keep], "y_train": lab["y_train"][keep]}
    return sampled


def inner_scorer(params: dict, threads: int | None = None, folds: int = 2, seed: int = 0, repeats: int = 1,
                 canonical_dir: Path = schema.CANONICAL_DIR, split_dir: Path = schema.SPLIT_DIR,
                 sample_clients: int | None = None, workers: int | None = None) -> InnerScorer:
    """The inner-split scorer for params.yaml's downstream protocol (`eval`), on the open tasks'
    train-window labels built from `canonical_dir` and `split_dir`'s train window (`ubp.inner_labels`,
    with params.yaml's `targets.n_labels`).

    `threads` overrides eval.threads (torch threads per network), `workers` eval.workers (processes
    training the networks of a scoring side by side: workers x threads should not exceed the cores).
    `sample_clients`: score on a sample of that many clients drawn with `seed` (see `sample_labels`);
    the scorer never sees the others, and its client_ids are the rows to give it."""
    evaluation = EvalConfig.from_params(params)
    config, workers = evaluation.protocol(), workers or evaluation.workers or 1
    if threads:
        config = dataclasses.replace(config, threads=int(threads))
    n_labels = TargetsConfig.from_params(params).n_labels
    labels = open_train_labels(canonical_dir, split_dir, n_labels, **FeaturesConfig.from_params(params).resources)
    labels = sample_labels(labels, sample_clients, int(seed))
    return InnerScorer(labels, config, int(folds), int(seed), int(repeats), int(workers))


# --- the search ------------------------------------------------------------------------------------

def greedy(candidates: list[str], objective: Callable[[tuple[str, ...]], float], min_gain: float = 0.0,
           max_sources: int | None = None) -> tuple[tuple[str, ...], list[dict]]:
    """Forward selection then backward pruning; returns the chosen set (candidate order) and the steps.

    `objective(set)` is called at most once per set (sets are tuples in candidate order)."""
    rank = {name: i for i, name in enumerate(candidates)}
    cache: dict[tuple[str, ...], float] = {}

    def value(names) -> float:
        key = tuple(sorted(names, key=rank.__getitem__))
        if key not in cache:
            cache[key] = objective(key)
        return cache[key]

    chosen: tuple[str, ...] = ()
    best = float("-inf")
    steps = []
    while len(chosen) < (max_sources or len(candidates)):
        tried = {name: value(chosen + (name,)) for name in candidates if name not in chosen}
        tried = {name: v for name, v in tried.items() if v is not None}
        if not tried:
            break
        pick = max(tried, key=lambda n: (tried[n], -rank[n]))  # ties: the earlier candidate
        gain = tried[pick] - best
        accepted = not chosen or gain > min_gain
        steps.append({"phase": "forward", "base": list(chosen), "tried": tried, "pick": pick,
                      "objective": tried[pick], "gain": None if not chosen else round(gain, 6), "accepted": accepted})
        if not accepted:
            break
        chosen, best = tuple(sorted(chosen + (pick,), key=rank.__getitem__)), tried[pick]
    while len(chosen) > 1:
        tried = {name: value(tuple(n for n in chosen if n != name)) for name in chosen}
        drop = max(tried, key=lambda n: (tried[n], rank[n]))  # ties: drop the later candidate
        accepted = tried[drop] >= best
        steps.append({"phase": "backward", "base": list(chosen), "tried": tried, "pick": drop,
                      "objective": tried[drop], "gain": round(tried[drop] - best, 6), "accepted": accepted})
        if not accepted:
            break
        chosen, best = tuple(n for n in chosen if n != drop), tried[drop]
    return chosen, steps


def default_candidates(params: dict, embeddings_dir: Path, exclude: list[str]) -> list[str]:
    names = []
    for name, entry in (params.get("models") or {}).items():
        method = (entry or {}).get("method", name)
        combined = method in available_methods() and traits(method).combined  # built from profiles: never one
        profile_dir = Path(embeddings_dir) / name
        if name in exclude or combined or store.skipped(profile_dir) is not None:
            continue
        if (profile_dir / store.EMBEDDINGS).exists():
            names.append(name)
        else:
            log.warning("selection: profile %s has no embedding in %s: not a candidate", name, profile_dir)
    return names


def source_blocks(candidates: list[str], params: dict, client_ids: np.ndarray, embeddings_dir: Path,
                  ensemble_cfg: ensemble.Config) -> dict[str, np.ndarray]:
    """Each candidate's ensemble block (float16) for client_ids, normalised as the ensemble does (its
    `per_source` settings, `balance`, `seed`); only client_ids' rows of each stored profile are read
    (it is memory-mapped)."""
    models = params.get("models") or {}
    blocks = {}
    for name in candidates:
        profile_dir = Path(embeddings_dir) / name
        if not (profile_dir / store.EMBEDDINGS).exists():
            raise UbpError(f"selection: candidate '{name}' has no embedding in {profile_dir} "
                           f"(run `python -m ubp embed {name}` first)")
        x, rows, present = stored(profile_dir, client_ids)
        method = str((models.get(name) or {}).get("method", name))
        source = Source(name=name, **dataclasses.asdict(ensemble_cfg.per_source.get(name, SourceSettings())))
        loaded = Loaded(source, method, x, present, "stored", rows)
        blocks[name] = block(loaded, len(client_ids), ensemble_cfg).astype(np.float16)
    return blocks


def select(params: dict, embeddings_dir: Path = schema.EMBEDDINGS_DIR, canonical_dir: Path = schema.CANONICAL_DIR,
           split_dir: Path = schema.SPLIT_DIR, threads: int | None = None) -> dict:
    """Run the selection; returns everything the report shows. `threads` overrides eval.threads.
    Reads the stored profiles, the relevant clients (and shipped open label sets) of `canonical_dir`
    and the train window and input purchases of `split_dir`; nothing of the validation window."""
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    cfg, ensemble_cfg = settings(params)
    candidates = list(cfg.candidates or default_candidates(params, embeddings_dir, list(cfg.exclude)))
    if not candidates:
        raise UbpError("selection: no candidate profiles (embed some profiles first, or set selection.candidates)")
    scorer = inner_scorer(params, threads, cfg.folds, cfg.seed, cfg.repeats, canonical_dir, split_dir,
                          cfg.sample_clients)
    config = scorer.config
    blocks = source_blocks(candidates, params, scorer.client_ids, embeddings_dir, ensemble_cfg)
    max_dim = min(ensemble_cfg.max_dim, schema.MAX_EMBEDDING_DIM)
    scored = {}

    def objective(names: tuple[str, ...]) -> float | None:
        width = sum(blocks[n].shape[1] for n in names)
        if width > max_dim:
            log.info("selection: %s has %d columns > max_dim %d: not tried", "+".join(names), width, max_dim)
            return None
        t = time.perf_counter()
        tasks = scorer.score(np.concatenate([blocks[n] for n in names], axis=1))
        total = round(sum(tasks.values()), SCORE_DECIMALS)
        scored["+".join(names)] = {"sources": list(names), "dim": width, "objective": total, "tasks": tasks,
                                   "seconds": round(time.perf_counter() - t, 1)}
        log.info("selection: %-40s objective %.4f (%d columns, %.1f s)", "+".join(names), total, width,
                 time.perf_counter() - t)
        return total

    chosen, steps = greedy(candidates, objective, cfg.min_gain, cfg.max_sources)
    return {"candidates": candidates, "tasks": list(TASKS), "selected": list(chosen),
            "objective": scored["+".join(chosen)]["objective"] if chosen else None,
            "settings": {**as_dict(cfg), "candidates": candidates, "eval": dataclasses.asdict(config)},
            "steps": steps, "scored": scored, "n_scored": len(scored),
            "seconds": round(time.perf_counter() - started, 1),
            "load": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cores": os.cpu_count()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ubp select", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPORT, help="report path without suffix")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per network (default eval.threads; 1 is much faster on a busy "
                             "machine); eval.workers networks train side by side")
    parser.add_argument("--embeddings-dir", type=Path, default=schema.EMBEDDINGS_DIR)
    parser.add_argument("--canonical-dir", type=Path, default=schema.CANONICAL_DIR)
    parser.add_argument("--split-dir", type=Path, default=schema.SPLIT_DIR)
    parser.add_argument("--before", type=Path, default=None,
                        help="an earlier selection's .json to set beside this one in the report")
    args = parser.parse_args(argv)
    before = None if args.before is None else earlier(args.before)  # read first: a wrong path fails at once
    result = select(load_params(), args.embeddings_dir, args.canonical_dir, args.split_dir, threads=args.threads)
    result["before"] = before
    save_json(args.out.with_suffix(".json"), result)
    save_text(args.out.with_suffix(".md"), markdown(result))
    log.info("selected %s (inner objective %s) -> %s.md/.json", ", ".join(result["selected"]), result["objective"],
             args.out)
    return 0
