"""Noise: the floor every profile must clear."""
from dataclasses import dataclass

import numpy as np

from ubp.models.base import EmbedContext, EmbeddingConfig

READS = ()


@dataclass(frozen=True)
class Config(EmbeddingConfig):
    dim: int = 64


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    rng = np.random.default_rng(cfg.seed)
    return rng.standard_normal((len(ctx.client_ids), cfg.dim), dtype=np.float32)
