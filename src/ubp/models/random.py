"""Noise: the floor every profile must clear."""
import numpy as np

from ubp.models.base import EmbedContext


def embed(ctx: EmbedContext, cfg: dict) -> np.ndarray:
    rng = np.random.default_rng(int(cfg.get("seed", ctx.seed)))
    return rng.standard_normal((len(ctx.client_ids), int(cfg.get("dim", 64))), dtype=np.float32)
