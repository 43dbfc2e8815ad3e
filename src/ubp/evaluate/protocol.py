"""The fixed downstream protocol: one fresh MLP per task, trained on the train window, scored on the
validation window (SPEC §6).

It reproduces the official Lightning pipeline step for step, in plain torch: the same layer creation
order after `torch.manual_seed(seed)` (so the same initial weights), the same batches in the given
client order, AdamW with torch defaults (`adamw.BlockedAdamW`: torch's arithmetic, bit for bit, run
faster), 3 epochs, validation after each, best of the epochs. The embedding is read a block of whole
batches at a time (`Rows`), in memory or from a .npy file.
With the official sizes, seed and 2 CPU threads the per-epoch metrics match the official ones
to ~1e-7 (tests/evaluate/test_conformance_eval.py).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ubp.evaluate.adamw import BlockedAdamW
from ubp.evaluate.metrics import TaskMetrics, is_binary, labels_without_positive
from ubp.config import build
from ubp.io import UbpError
from ubp.params import section_config

OFFICIAL_SEED = 1278
SCORE_DECIMALS = 4


@dataclasses.dataclass(frozen=True)
class ProtocolConfig:
    """Network size and training settings; the defaults are the official ones."""

    thin: int = 2048
    wide: int = 4096
    seed: int = OFFICIAL_SEED
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads; None leaves torch's setting alone

    @classmethod
    def from_params(cls, eval_params: Mapping | None, size: str | None = None) -> "ProtocolConfig":
        """From params.yaml's `eval` section (checked as an `EvalConfig`); `size` (default `eval.profile`)
        picks `eval.sizes.<size>`."""
        return build(EvalConfig, eval_params, "eval").protocol(size)


@dataclasses.dataclass(frozen=True)
class NetworkSize:
    """One entry of `eval.sizes`: the widths of the protocol's network."""
    thin: int
    wide: int


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """params.yaml's `eval` section, the only home of its defaults: the network size `profile` (a key
    of `sizes`), the training settings (the protocol's, by default the official ones) and how the
    evaluate stage runs the six tasks (`workers` processes of `threads` torch threads each)."""
    profile: str = "default"
    sizes: Mapping[str, NetworkSize] = dataclasses.field(default_factory=lambda: MappingProxyType({
        "default": NetworkSize(thin=256, wide=512),  # CPU-sized: the default data's 12k clients
        "official": NetworkSize(thin=ProtocolConfig.thin, wide=ProtocolConfig.wide),
    }))
    seed: int = ProtocolConfig.seed
    epochs: int = ProtocolConfig.epochs
    batch_size: int = ProtocolConfig.batch_size
    lr: float = ProtocolConfig.lr
    threads: int | None = ProtocolConfig.threads  # torch CPU threads per task; None leaves torch's setting alone
    workers: int | None = 1  # processes training the tasks' networks (None: 1)
    device: str = ProtocolConfig.device
    # Score on a seeded sample of this many relevant clients (None: all, as the official pipeline).
    # Every task keeps the sampled clients it has, in the submitted order; the same sample for every
    # profile, so profiles stay comparable with each other, not with a run on all clients.
    sample_clients: int | None = None

    def __post_init__(self):
        if self.profile not in self.sizes:
            raise UbpError(f"params.yaml: no network size '{self.profile}' under eval.sizes "
                           f"(have: {', '.join(self.sizes)})")
        if self.workers is not None and self.workers < 1:
            raise UbpError(f"params.yaml: eval.workers must be a whole number >= 1, got {self.workers!r}")
        if self.threads is not None and self.threads < 1:
            raise UbpError(f"params.yaml: eval.threads must be a whole number >= 1 or null, got {self.threads!r}")
        if self.sample_clients is not None and self.sample_clients < 1:
            raise UbpError(f"params.yaml: eval.sample_clients must be a whole number >= 1 or null, "
                           f"got {self.sample_clients!r}")

    @classmethod
    def from_params(cls, params: Mapping) -> "EvalConfig":
        return section_config(params, cls, "eval")

    def protocol(self, size: str | None = None) -> ProtocolConfig:
        """The protocol's settings with the network `size` (default: `profile`)."""
        size = size or self.profile
        if size not in self.sizes:
            raise UbpError(f"params.yaml: no network size '{size}' under eval.sizes (have: {', '.join(self.sizes)})")
        dims = self.sizes[size]
        return ProtocolConfig(thin=dims.thin, wide=dims.wide, seed=self.seed, epochs=self.epochs,
                              batch_size=self.batch_size, lr=self.lr, device=self.device, threads=self.threads)


class Block(nn.Module):
    """Inverted bottleneck: widen, GELU, project back."""

    def __init__(self, thin: int, wide: int):
        super().__init__()
        self.l1 = nn.Linear(thin, wide)
        self.l2 = nn.Linear(wide, thin)
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.gelu(self.l1(x)))


class DownstreamNet(nn.Module):
    # The creation order below decides which random numbers each layer draws: keep it as is.
    def __init__(self, d_in: int, n_out: int, thin: int, wide: int):
        super().__init__()
        self.input_projection = nn.Linear(d_in, thin)
        self.ln_input = nn.LayerNorm(thin)
        self.layernorms = nn.ModuleList([nn.LayerNorm(thin) for _ in range(3)])
        self.blocks = nn.ModuleList([Block(thin, wide) for _ in range(3)])
        self.ln_output = nn.LayerNorm(thin)
        self.linear_output = nn.Linear(thin, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_input(self.input_projection(x))
        for norm, block in zip(self.layernorms, self.blocks):
            x = x + block(norm(x))
        return self.linear_output(self.ln_output(x))


def build_net(d_in: int, n_out: int, config: ProtocolConfig) -> DownstreamNet:
    torch.manual_seed(config.seed)  # right before the layers, as the official model does
    return DownstreamNet(d_in, n_out, config.thin, config.wide)


def align_rows(task_client_ids, client_ids) -> tuple[np.ndarray, np.ndarray]:
    """Where the task's clients are, in the order of the submitted `client_ids` (the official order).

    Returns (rows, label_rows): `rows` are the positions in `client_ids` of the ids that belong to the
    task, in submitted (so increasing) order; `label_rows` the matching positions in `task_client_ids`.
    Every task client must have an embedding.
    """
    task_ids = np.asarray(task_client_ids)
    ids = np.asarray(client_ids)
    if len(np.unique(task_ids)) != len(task_ids):
        raise UbpError("the task's client ids contain duplicates")
    rows = np.flatnonzero(np.isin(ids, task_ids))
    kept = ids[rows]
    if len(np.unique(kept)) != len(kept):
        raise UbpError("the embedding's client_ids contain duplicates")
    missing = np.setdiff1d(task_ids, kept)
    if len(missing):
        raise UbpError(f"{len(missing)} task clients have no embedding (e.g. client_id {missing[0]})")
    by_id = np.argsort(task_ids)
    return rows, by_id[np.searchsorted(task_ids[by_id], kept)]


def align(task_client_ids, y_train, y_val, client_ids, embeddings):
    """The task's rows in the order of the submitted `client_ids`, in memory (see `align_rows`).

    Returns (ids, x, y_train, y_val): the submitted ids that belong to the task, in submitted order,
    their embeddings and their label rows.
    """
    rows, label_rows = align_rows(task_client_ids, client_ids)
    return (np.asarray(client_ids)[rows], np.asarray(embeddings)[rows], np.asarray(y_train)[label_rows],
            np.asarray(y_val)[label_rows])


@dataclasses.dataclass(frozen=True)
class Rows:
    """The embedding rows a network reads, in this order: `x[rows]` (all of `x` when rows is None).

    `x` is an array in memory or the path of a .npy file. A file is read one block at a time through
    a memory map opened for that block only, so a reader's resident memory holds a block, not the
    file (its pages stay in the page cache, shared by the workers reading the same file).
    """

    x: np.ndarray | Path
    rows: np.ndarray | None = None

    def _source(self) -> np.ndarray:
        return np.load(self.x, mmap_mode="r") if isinstance(self.x, Path) else self.x

    @property
    def shape(self) -> tuple[int, int]:
        n, width = self._source().shape
        return (n if self.rows is None else len(self.rows)), width

    def __len__(self) -> int:
        return self.shape[0]

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 as a float32 array of its own (float16 embeddings are cast here)."""
        source = self._source()
        part = source[start:stop] if self.rows is None else source[self.rows[start:stop]]
        return np.array(part, dtype=np.float32)


def as_rows(x) -> Rows:
    return x if isinstance(x, Rows) else Rows(np.asarray(x))


BLOCK_BYTES = 32 << 20  # float32 rows read (and cast) at once: a few hundred batches of a narrow embedding


def _blocks(n: int, width: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of blocks made of whole batches, so every batch is the same 128 rows as ever."""
    step = batch_size * max(1, BLOCK_BYTES // (4 * max(width, 1) * batch_size))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def _batches(n: int, size: int):
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _tensor(array, dtype, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype)).to(device)


@torch.no_grad()
def _validate(net: nn.Module, x: Rows, y: np.ndarray, metrics: TaskMetrics, batch_size: int,
              device: torch.device) -> dict:
    net.eval()
    for start, stop in _blocks(len(y), x.shape[1], batch_size):
        xb = _tensor(x.block(start, stop), np.float32, device)
        # uint8 0/1 labels stay uint8: torchmetrics keeps every batch's targets until compute()
        yb = torch.from_numpy(np.ascontiguousarray(y[start:stop])).to(device)
        for batch in _batches(stop - start, batch_size):
            metrics.update(net(xb[batch]), yb[batch])
    return metrics.compute()


def train_and_score(task: str, x_fit, y_fit, x_score, y_score, popularity, config: ProtocolConfig,
                    progress=None) -> list[dict]:
    """The protocol's network trained on (x_fit, y_fit) and scored on (x_score, y_score) after every
    epoch; each epoch's metrics. `evaluate_task` passes the same clients twice (train window, then
    validation window); the inner split of `ubp.selection` passes different clients.

    x_fit and x_score are arrays or `Rows` (e.g. rows of a .npy file); they are read a block of whole
    batches at a time, so a float16 embedding is never held as float32 in full.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    # Very confident logits give subnormal gradients, which x86 CPUs process ~20x slower (one
    # propensity task took 378 s instead of 22 s); flushing them to zero leaves every metric
    # of the conformance runs unchanged within its 1e-5 tolerance.
    torch.set_flush_denormal(True)
    device = torch.device(config.device)
    fit, score = as_rows(x_fit), as_rows(x_score)
    (n_fit, width), n_score = fit.shape, len(score)
    y_fit = np.asarray(y_fit).reshape(n_fit, -1)
    y_score = np.asarray(y_score).reshape(n_score, -1)
    net = build_net(width, y_fit.shape[1], config).to(device)
    # torch.optim.AdamW with its defaults (weight_decay 0.01), bit for bit, a cache-sized block at a time
    optimizer = BlockedAdamW(net.parameters(), lr=config.lr)
    metrics = TaskMetrics(task, popularity, device=device)
    blocks = _blocks(n_fit, width, config.batch_size)
    per_epoch = []
    for _ in range(config.epochs):
        net.train()
        for start, stop in blocks:
            xb = _tensor(fit.block(start, stop), np.float32, device)
            yb = _tensor(y_fit[start:stop], np.float32, device)
            for batch in _batches(stop - start, config.batch_size):
                loss = F.binary_cross_entropy_with_logits(net(xb[batch]), yb[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if progress:
                    progress(batch.stop - batch.start)
        per_epoch.append(_validate(net, score, y_score, metrics, config.batch_size, device))
    return per_epoch


def evaluate_task(task: str, embeddings, y_train, y_val, popularity=None, config: ProtocolConfig | None = None,
                  progress=None) -> dict:
    """Train the task's network and score it on the validation labels.

    `embeddings` (an array or `Rows`) and the label matrices are already aligned (see `align`).
    Returns the best epoch's score (rounded), auroc, diversity, novelty, the best epoch, every epoch's
    metrics, sizes and seconds. `progress` (optional) is called with the number of samples done after
    every batch.
    """
    config = config or ProtocolConfig()
    started = time.perf_counter()
    y_train = np.asarray(y_train).reshape(len(y_train), -1)
    y_val = np.asarray(y_val).reshape(len(y_val), -1)
    x = as_rows(embeddings)
    n = len(x)
    if not (n == len(y_train) == len(y_val)):
        raise UbpError(f"task {task}: {n} embeddings, {len(y_train)} train rows, {len(y_val)} validation rows")
    if n == 0:
        raise UbpError(f"task {task}: no clients")
    if is_binary(task) and y_train.shape[1] != 1:
        raise UbpError(f"task {task}: a binary task needs one label column, got {y_train.shape[1]}")

    per_epoch = train_and_score(task, x, y_train, x, y_val, popularity, config, progress)

    scores = [epoch["score"] for epoch in per_epoch]
    best = scores.index(max(scores))  # the first maximum, as the official aggregator
    result = {
        "score": round(scores[best], SCORE_DECIMALS),
        "auroc": per_epoch[best]["auroc"],
        "diversity": per_epoch[best]["diversity"],
        "novelty": per_epoch[best]["novelty"],
        "best_epoch": best,
        "per_epoch": per_epoch,
        "n_clients": int(n),
        "n_labels": int(y_train.shape[1]),
        "labels_without_positive": labels_without_positive(y_val),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return result
