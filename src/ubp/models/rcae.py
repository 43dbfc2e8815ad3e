"""Residual-contrastive autoencoder on the handcrafted features (SPEC §9.5, seed 000).

Encoder: fully connected layers of `widths` (512-256-128-64), each Linear → BatchNorm → GELU with a
residual skip added after it (a bias-free linear projection where the widths differ), then a linear
bottleneck of size `latent` — the profile. The decoder mirrors it back to the feature width.

Loss = MSE(reconstruction of the clean features from the first of two noisy views)
     + lambda_contrastive · InfoNCE(latents of the two views, in-batch negatives, `temperature`)
     + lambda_latent · mean ‖z‖².
Curriculum noise: the Gaussian input noise σ goes linearly from `noise_start` (0.10) at the first
epoch to `noise_end` (0.02) at the last configured epoch. AdamW; early stopping on held-out clients.

Where the paper is silent:
* Input: the features quantile-mapped to a normal then standardized (`_training.tabular_input`).
* The validation loss uses fixed views at σ = `noise_end` (drawn once, from the seed), so that it
  compares epochs on equal terms while the training noise shrinks.
* σ (the standard deviation) is annealed, not the variance; the latent is a plain linear layer so
  that both InfoNCE and the ‖z‖² penalty act on exactly the vector we publish.
* InfoNCE is symmetric over cosine similarities; λ's and τ are our picks (the paper grid-searched).
* The profile is the latent of the clean input in eval mode (BatchNorm running statistics).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ubp.models import _training as T
from ubp.models.base import EmbedContext

READS = ("features",)


@dataclass(frozen=True)
class Config(T.TabularConfig):
    latent: int = 64  # the profile's width
    widths: tuple[int, ...] = (512, 256, 128, 64)
    lambda_contrastive: float = 0.1  # "light-weight" InfoNCE
    lambda_latent: float = 1e-3
    temperature: float = 0.2
    noise_start: float = 0.10
    noise_end: float = 0.02
    weight_decay: float = 1e-4  # AdamW


class ResidualBlock(nn.Module):
    """GELU(BN(W x)) + skip(x), skip = identity or a projection where the widths differ."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.norm = nn.BatchNorm1d(d_out)
        self.act = nn.GELU()
        self.skip = nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.linear(x))) + self.skip(x)


class RCAE(nn.Module):
    def __init__(self, n_features: int, widths: list[int], latent: int):
        super().__init__()
        dims = [n_features, *widths]
        self.encoder = nn.Sequential(*[ResidualBlock(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.to_latent = nn.Linear(dims[-1], latent)
        back = [latent, *reversed(widths)]
        self.decoder = nn.Sequential(*[ResidualBlock(a, b) for a, b in zip(back[:-1], back[1:])],
                                     nn.Linear(back[-1], n_features))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return z, self.decoder(z)


def noise_sigma(epoch: int, epochs: int, start: float, end: float) -> float:
    """Linear curriculum: `start` at epoch 0, `end` at epoch epochs - 1."""
    if epochs <= 1:
        return float(start)
    return float(start + (end - start) * min(epoch, epochs - 1) / (epochs - 1))


def rcae_loss(model: RCAE, clean: torch.Tensor, view_a: torch.Tensor, view_b: torch.Tensor,
              cfg: Config) -> torch.Tensor:
    z_a, rec_a = model(view_a)
    z_b = model.encode(view_b)  # the second view only feeds InfoNCE: decoding it too costs ~20% more time
    reconstruction = nn.functional.mse_loss(rec_a, clean)
    contrastive = T.info_nce(z_a, z_b, cfg.temperature)
    latent = 0.5 * (z_a.pow(2).sum(1).mean() + z_b.pow(2).sum(1).mean())
    return reconstruction + cfg.lambda_contrastive * contrastive + cfg.lambda_latent * latent


def train(x: np.ndarray, cfg: Config, info: dict | None = None) -> RCAE:
    """Fit an RCAE on the rows of x (already transformed); returns the best model in eval mode."""
    info = {} if info is None else info
    rng = T.seed_everything(cfg.seed)
    device = T.resolve_device(cfg.device)
    model = RCAE(x.shape[1], list(cfg.widths), cfg.latent).to(device)
    optimizer = T.optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    train_idx, val_idx = T.fit_split(len(x), cfg, info)
    data = torch.from_numpy(x).to(device)

    def train_epoch(epoch: int) -> float:
        sigma = noise_sigma(epoch, cfg.epochs, cfg.noise_start, cfg.noise_end)

        def step(idx: np.ndarray) -> torch.Tensor:
            clean = data[idx]
            return rcae_loss(model, clean, clean + sigma * torch.randn_like(clean),
                             clean + sigma * torch.randn_like(clean), cfg)
        return T.run_batches(step, T.batches(train_idx, cfg.batch_size, rng), optimizer)

    val_loss = None
    if len(val_idx):
        # Fixed validation views at the final noise level, from their own generator.
        draw = np.random.default_rng([cfg.seed, 1]).standard_normal((2, len(val_idx), x.shape[1]))
        views = torch.from_numpy((x[val_idx][None] + cfg.noise_end * draw).astype(np.float32)).to(device)
        val_parts = T.batches(np.arange(len(val_idx)), cfg.batch_size)

        def val_loss(epoch: int) -> float:
            clean = data[val_idx]
            return T.run_batches(lambda i: rcae_loss(model, clean[i], views[0][i], views[1][i], cfg), val_parts)

    info.update(n_train=int(len(train_idx)), n_val=int(len(val_idx)), n_features=int(x.shape[1]))
    with T.deterministic(cfg.threads):
        T.fit(model, train_epoch, val_loss, cfg.epochs, cfg.patience, info, desc="rcae")
    return model


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    return T.embed_tabular(ctx, cfg, train, "encode")
