"""Deep & Cross network (DCN-v2) trained contrastively on the handcrafted features (SPEC §9.10, seed 003).

Cross layers model explicit feature interactions, x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l (full-rank
W_l, as in DCN-v2), and a deep branch of Linear → BatchNorm → GELU layers of width `dim` (default:
the shared `model.hidden`) models implicit ones. Two augmented views of each client (each feature zeroed
with probability `mask_rate`, then Gaussian noise `noise`) go through the network and a projection
head; an in-batch InfoNCE loss (seed 003's L_SSL^CL, the other clients of the batch as negatives)
pulls the views of one client together. The profile is the projection head's input — the
representation of the clean input in eval mode. AdamW; early stopping on held-out clients.

Where seed 003 is silent:
* `structure: stacked` (default; cross layers, then the deep branch on their output) or `parallel`
  (both branches on x0, concatenated, then one Linear → BatchNorm → GELU to width `dim`).
  Stacked is the DCN-v2 paper's default structure and keeps the profile a single chain.
* Similarities are cosines (normalized projections) with temperature `temperature`, made symmetric.
* Masking sets a feature to 0 — the column mean of the standardized input, i.e. "no information".
* Input as for rcae: quantile-mapped to a normal, then standardized (`_training.tabular_input`).
* The validation loss uses one fixed draw of augmentations (from the seed), comparable across epochs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from ubp.models import _training as T
from ubp.models.base import EmbedContext

READS = ("features",)


@dataclass(frozen=True)
class Config(T.TabularConfig):
    dim: int | None = None  # the profile width; None: `hidden` (what `-S model.hidden=512` changes)
    cross_layers: int = 3
    deep_layers: int = 2
    structure: Literal["stacked", "parallel"] = "stacked"
    projection: int = 128
    temperature: float = 0.2
    mask_rate: float = 0.2
    noise: float = 0.1
    weight_decay: float = 1e-4

    @property
    def width(self) -> int:
        """The profile's width."""
        return self.dim or self.hidden


class CrossLayer(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.linear = nn.Linear(d, d)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


def dense(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.GELU())


class DCN(nn.Module):
    def __init__(self, n_features: int, dim: int, cross_layers: int, deep_layers: int, projection: int,
                 structure: str = "stacked"):
        super().__init__()
        if structure not in ("stacked", "parallel"):
            raise ValueError(f"dcn structure must be 'stacked' or 'parallel', not '{structure}'")
        self.structure = structure
        self.cross = nn.ModuleList([CrossLayer(n_features) for _ in range(cross_layers)])
        widths = [n_features] + [dim] * max(1, deep_layers)
        self.deep = nn.Sequential(*[dense(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.combine = dense(n_features + dim, dim) if structure == "parallel" else None
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, projection))

    def represent(self, x0: torch.Tensor) -> torch.Tensor:
        """The profile: the representation the projection head reads."""
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        if self.structure == "stacked":
            return self.deep(x)
        return self.combine(torch.cat([x, self.deep(x0)], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.represent(x))


def augment(x: torch.Tensor, mask_rate: float, noise: float, generator: torch.Generator | None = None) -> torch.Tensor:
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= mask_rate
    return x * keep + noise * torch.randn(x.shape, generator=generator, device=x.device)


def train(x: np.ndarray, cfg: Config, info: dict | None = None) -> DCN:
    """Fit a DCN on the rows of x (already transformed); returns the best model in eval mode."""
    info = {} if info is None else info
    rng = T.seed_everything(cfg.seed)
    device = T.resolve_device(cfg.device)
    model = DCN(x.shape[1], cfg.width, cfg.cross_layers, cfg.deep_layers, cfg.projection, cfg.structure).to(device)
    optimizer = T.optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    train_idx, val_idx = T.fit_split(len(x), cfg, info)
    data = torch.from_numpy(x).to(device)

    def step(idx: np.ndarray) -> torch.Tensor:
        clean = data[idx]
        first = model(augment(clean, cfg.mask_rate, cfg.noise))
        return T.info_nce(first, model(augment(clean, cfg.mask_rate, cfg.noise)), cfg.temperature)

    def train_epoch(epoch: int) -> float:
        return T.run_batches(step, T.batches(train_idx, cfg.batch_size, rng), optimizer)

    val_loss = None
    if len(val_idx):
        generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        clean = data[val_idx]
        views = [augment(clean, cfg.mask_rate, cfg.noise, generator) for _ in range(2)]
        val_parts = T.batches(np.arange(len(val_idx)), cfg.batch_size)

        def val_loss(epoch: int) -> float:
            return T.run_batches(lambda i: T.info_nce(model(views[0][i]), model(views[1][i]), cfg.temperature),
                                 val_parts)

    info.update(n_train=int(len(train_idx)), n_val=int(len(val_idx)), n_features=int(x.shape[1]))
    with T.deterministic(cfg.threads):
        T.fit(model, train_epoch, val_loss, cfg.epochs, cfg.patience, info, desc="dcn")
    return model


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    return T.embed_tabular(ctx, cfg, train, "represent")
