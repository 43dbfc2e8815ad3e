"""Deep & Cross network (DCN-v2) trained contrastively on the handcrafted features (SPEC §9.10, seed 003).

Cross layers model explicit feature interactions, x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l (full-rank
W_l, as in DCN-v2), and a deep branch of Linear → BatchNorm → GELU layers of width `dim` (default:
the shared `hidden`) models implicit ones. Two augmented views of each client (each feature zeroed
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

import numpy as np
import torch
from torch import nn

from ubp.models import _training as T
from ubp.models.base import EmbedContext

DEFAULTS = {
    "hidden": 256,
    "dim": None,  # the profile width; None: `hidden` (what `-S model.hidden=512` changes)
    "cross_layers": 3,
    "deep_layers": 2,
    "structure": "stacked",  # or "parallel"
    "projection": 128,
    "temperature": 0.2,
    "mask_rate": 0.2,
    "noise": 0.1,
    "weight_decay": 1e-4,
}


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


def profile_width(s: dict) -> int:
    return int(s["dim"] if s.get("dim") else s["hidden"])


def train(x: np.ndarray, cfg: dict, info: dict | None = None) -> DCN:
    """Fit a DCN on the rows of x (already transformed); returns the best model in eval mode."""
    s = T.settings(cfg, DEFAULTS)
    info = {} if info is None else info
    rng = T.seed_everything(s["seed"])
    device = T.resolve_device(s["device"])
    model = DCN(x.shape[1], profile_width(s), int(s["cross_layers"]), int(s["deep_layers"]),
                int(s["projection"]), str(s["structure"])).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(s["lr"]), weight_decay=float(s["weight_decay"]))
    train_idx, val_idx = T.fit_split(len(x), s, info)
    data = torch.from_numpy(x).to(device)
    mask_rate, noise, tau = float(s["mask_rate"]), float(s["noise"]), float(s["temperature"])

    def step(idx: np.ndarray) -> torch.Tensor:
        clean = data[idx]
        return T.info_nce(model(augment(clean, mask_rate, noise)), model(augment(clean, mask_rate, noise)), tau)

    def train_epoch(epoch: int) -> float:
        return T.run_batches(step, T.batches(train_idx, int(s["batch_size"]), rng), optimizer)

    val_loss = None
    if len(val_idx):
        generator = torch.Generator(device=device).manual_seed(int(s["seed"]) + 1)
        clean = data[val_idx]
        views = [augment(clean, mask_rate, noise, generator) for _ in range(2)]
        val_parts = T.batches(np.arange(len(val_idx)), int(s["batch_size"]))

        def val_loss(epoch: int) -> float:
            return T.run_batches(lambda i: T.info_nce(model(views[0][i]), model(views[1][i]), tau), val_parts)

    info.update(n_train=int(len(train_idx)), n_val=int(len(val_idx)), n_features=int(x.shape[1]))
    with T.deterministic(s["threads"]):
        T.fit(model, train_epoch, val_loss, int(s["epochs"]), int(s["patience"]), info, desc="dcn")
    return model


def embed(ctx: EmbedContext, cfg: dict) -> np.ndarray:
    return T.embed_tabular(ctx, cfg, DEFAULTS, train, "represent")
