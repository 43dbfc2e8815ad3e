"""What every neural embedding method shares: its settings (`TrainingConfig`, params.yaml's `model:`),
seeding, threads, device, the clients a network is fitted on (all, or a seeded sample of
`fit_clients`) split into train and held-out rows, an early-stopping loop that records the training
curve, and batched inference.

A method builds its model and two callables — one training epoch (returns the mean train loss) and
one evaluation on the held-out clients (returns the validation loss) — and hands them to `fit`,
which keeps the best weights, stops after `patience` epochs without improvement, restores the best
weights and writes the per-epoch curve into `ctx.info["curve"]`.

Determinism: every random draw comes from `torch.manual_seed(seed)` or a numpy Generator made
from the seed, and the ops used (dense layers, BatchNorm, GELU) are deterministic on CPU, so one
cfg gives byte-identical outputs; on GPU `deterministic()` also asks cuDNN for deterministic kernels.
Every network trains with `optimizer()` (torch's fused Adam/AdamW), whose step does not depend on
the CPU model; the matmuls do (MKL chooses its kernels by CPU vendor): see ubp/portable.py.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ubp.io import UbpError
from ubp.models.base import EmbeddingConfig, standardize

log = logging.getLogger("ubp.models")

@dataclass(frozen=True)
class TrainingConfig(EmbeddingConfig):
    """params.yaml's `model:` section, which every neural profile inherits; a method's Config adds its own."""
    hidden: int = 128  # the network's width (most methods: the profile's width)
    standardize: bool = True  # ubp.embed.compute publishes each column centred and scaled
    fit_clients: int | None = None  # fit on a seeded sample of this many clients (None: all); all are embedded
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    patience: int = 3  # epochs without a better validation loss before stopping
    val_fraction: float = 0.1  # held-out share of the fitted clients (early stopping)
    threads: int = 2  # torch intra-op threads

    def __post_init__(self):
        positive = {k: getattr(self, k) for k in ("hidden", "epochs", "batch_size", "patience", "threads")}
        bad = [f"{k}={v}" for k, v in positive.items() if v < 1]
        if self.fit_clients is not None and self.fit_clients < 1:
            bad.append(f"fit_clients={self.fit_clients} (a positive integer, or null for all clients)")
        if not 0.0 <= self.val_fraction < 1.0 or not self.lr > 0:
            bad.append(f"val_fraction={self.val_fraction}, lr={self.lr} (need 0 <= val_fraction < 1, lr > 0)")
        if bad:
            raise UbpError(f"params.yaml: training settings out of range: {'; '.join(bad)}")


@dataclass(frozen=True)
class TabularConfig(TrainingConfig):
    """A network over the handcrafted features (`tabular_input`): their quantile map's settings."""
    n_quantiles: int = 1000
    subsample: int = 200_000


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy's legacy state and torch (all devices); a Generator for the caller's own draws."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def resolve_device(name: str | None) -> torch.device:
    device = torch.device(str(name or "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UbpError(f"device '{name}' requested but CUDA is not available (set model.device: cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UbpError(f"device '{name}' requested but MPS is not available (set model.device: cpu)")
    return device


@contextlib.contextmanager
def deterministic(threads: int | None) -> Iterator[None]:
    """torch intra-op threads from cfg and deterministic cuDNN, restored afterwards."""
    old_threads, old_cudnn = torch.get_num_threads(), torch.backends.cudnn.deterministic
    if threads:
        torch.set_num_threads(int(threads))
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.cudnn.deterministic = old_cudnn


def optimizer(params, lr: float, weight_decay: float | None) -> torch.optim.Optimizer:
    """AdamW (Adam when `weight_decay` is None) on torch's fused kernel.

    The default implementation takes the second moment's square root with `torch.sqrt`, which on a
    CPU goes through MKL's vector maths: MKL chooses that code by CPU vendor, and on AMD processors
    it is not IEEE's square root (it refines the approximate `rsqrtps` instruction, whose result
    differs between CPU implementations). So the same gradients gave other weights after one step
    on another CPU model; the fused step gave the same bytes on all three tried
    (reports/bench/kernel_probe.md).
    """
    if weight_decay is None:
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


def holdout_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) row indices, disjoint, sorted, seeded; no val rows when val_fraction is 0 or n < 4."""
    n_val = 0 if val_fraction <= 0 or n < 4 else min(max(1, int(round(n * float(val_fraction)))), n - 2)
    order = np.random.default_rng([int(seed), 7919]).permutation(n)  # own stream: independent of training draws
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fit_sample(n: int, fit_clients: int | None, seed: int) -> np.ndarray | None:
    """The sorted rows of a seeded sample of `fit_clients` of n clients, or None for all of them
    (fit_clients None or >= n). An epoch costs time per client fitted on, and a network learns its
    weights from far fewer clients than the real data's million; every client is still embedded."""
    if fit_clients is None or fit_clients >= n:
        return None
    rng = np.random.default_rng([int(seed), 104729])  # own stream: the training draws stay as without a sample
    return np.sort(rng.choice(n, size=int(fit_clients), replace=False))


def fit_split(n: int, cfg: TrainingConfig, info: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) rows of n clients a network is fitted on: `holdout_split` of all rows, or of the
    `fit_clients` sample (the held-out share `val_fraction` is then taken inside the sample)."""
    rows = fit_sample(n, cfg.fit_clients, cfg.seed)
    if rows is None:
        return holdout_split(n, cfg.val_fraction, cfg.seed)
    train, val = holdout_split(len(rows), cfg.val_fraction, cfg.seed)
    if info is not None:
        info["fit_clients"] = int(len(rows))
    return rows[train], rows[val]


def batches(indices: np.ndarray, batch_size: int, rng: np.random.Generator | None = None,
            min_size: int = 2) -> list[np.ndarray]:
    """Minibatches of `indices` (shuffled with rng if given). A last batch smaller than `min_size`
    joins the one before: BatchNorm needs two rows and in-batch negatives need a second client."""
    indices = rng.permutation(indices) if rng is not None else np.asarray(indices)
    parts = [indices[i:i + batch_size] for i in range(0, len(indices), max(1, int(batch_size)))]
    if len(parts) > 1 and len(parts[-1]) < min_size:
        parts[-2:] = [np.concatenate(parts[-2:])]
    return parts


def run_batches(loss_fn: Callable[[np.ndarray], torch.Tensor], parts: list[np.ndarray],
                optimizer: torch.optim.Optimizer | None = None) -> float:
    """Mean of loss_fn over the batches (weighted by batch size); a training step per batch with an optimizer."""
    total, count = 0.0, 0
    for idx in parts:
        loss = loss_fn(idx)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
    return total / max(count, 1)


@dataclass
class FitResult:
    best_epoch: int  # 1-based
    best_loss: float
    epochs_run: int
    stopped_early: bool


def fit(model: nn.Module, train_epoch: Callable[[int], float], val_loss: Callable[[int], float] | None,
        epochs: int, patience: int, info: dict, desc: str = "train") -> FitResult:
    """Train for up to `epochs`, keep the weights of the best epoch (lowest validation loss, or train
    loss without held-out clients), stop after `patience` epochs without improvement, restore the best.

    `train_epoch(epoch)` and `val_loss(epoch)` get the 0-based epoch; `fit` puts the model in train
    mode before the first and in eval mode under no_grad before the second. Records one row per
    epoch (epoch, train_loss, val_loss, seconds) to info["curve"], which starts empty.
    """
    curve = info["curve"] = []
    best_loss, best_epoch, best_state, waited = float("inf"), 0, None, 0
    bar = tqdm(range(int(epochs)), desc=desc, unit="epoch", leave=False, disable=None)
    epoch = -1
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        train = float(train_epoch(epoch))
        model.eval()
        with torch.no_grad():
            val = float(val_loss(epoch)) if val_loss is not None else float("nan")
        seconds = time.perf_counter() - start
        curve.append({"epoch": epoch + 1, "train_loss": round(train, 6),
                      "val_loss": round(val, 6) if val == val else "", "seconds": round(seconds, 3)})
        score = val if val_loss is not None else train
        if not np.isfinite(score):
            raise UbpError(f"{desc}: the loss became {score} at epoch {epoch + 1} (try a lower lr)")
        improved = score < best_loss
        if improved:
            best_loss, best_epoch, waited = score, epoch + 1, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        bar.set_postfix(train=f"{train:.4f}", val=f"{val:.4f}", best=best_epoch)
        log.info("%s epoch %d/%d: train %.5f, val %.5f, %.1f s%s", desc, epoch + 1, epochs, train, val,
                 seconds, " *" if improved else "")
        if waited >= patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    epochs_run = epoch + 1
    result = FitResult(best_epoch, best_loss, epochs_run, epochs_run < int(epochs))
    info.update(best_epoch=result.best_epoch, epochs_run=result.epochs_run,
                best_loss=round(result.best_loss, 6) if best_state is not None else None)
    return result


@torch.no_grad()
def predict(fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray | torch.Tensor, batch_size: int,
            device: torch.device | str = "cpu") -> np.ndarray:
    """fn over the rows of x in batches on `device`, as one float32 numpy array (x stays where it is).

    Each batch's output is copied into one array allocated at the first batch and then released. Kept
    as a list of per-batch outputs and concatenated at the end, torch's buffers of a million rows
    fragmented the C heap: a transformer's embedding pass at 1M clients grew to 24 GB and was killed
    for memory (reports/scale.md, part 7), where the outputs themselves are 0.5 GB.
    """
    out = None
    for start in range(0, len(x), max(1, int(batch_size))):
        chunk = x[start:start + batch_size]
        chunk = torch.as_tensor(np.array(chunk) if isinstance(chunk, np.ndarray) else chunk)  # any strides
        y = fn(chunk.to(device)).float().cpu().numpy()
        if out is None:
            out = np.empty((len(x),) + y.shape[1:], dtype=np.float32)
        out[start:start + len(y)] = y
        del y
    return out if out is not None else np.zeros((0, 0), np.float32)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE (NT-Xent with the other view's batch as negatives) on cosine similarities:
    row i of `a` should match row i of `b` among all rows of `b`, and vice versa."""
    a = nn.functional.normalize(a, dim=1)
    b = nn.functional.normalize(b, dim=1)
    logits = a @ b.T / float(temperature)
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target))


def tabular_input(ctx, cfg: TabularConfig) -> np.ndarray:
    """The handcrafted feature table (rows in ctx.client_ids order) as a network input: quantile-mapped
    to a normal (tames heavy tails, SPEC §8), then standardized, because the quantile map sends a
    column's ties — e.g. the many zero counts — to one extreme value, far from mean 0 / sd 1."""
    from ubp.features.table import feature_matrix, load_or_build
    from ubp.models.features import quantile_normal

    x = quantile_normal(feature_matrix(load_or_build(ctx)), cfg.n_quantiles, cfg.subsample, cfg.seed)  # new float32
    return standardize(x, out=x)


def embed_tabular(ctx, cfg: TabularConfig, train: Callable, represent: str) -> np.ndarray:
    """The embed() of a model over the handcrafted features: train it, then read `model.<represent>`."""
    with deterministic(cfg.threads):
        x = tabular_input(ctx, cfg)
        model = train(x, cfg, ctx.info)
        return predict(getattr(model, represent), x, 4096, resolve_device(cfg.device))
