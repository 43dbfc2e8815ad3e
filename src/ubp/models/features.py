"""The handcrafted behavioural features (SPEC §9.2) as a profile, quantile-transformed to a normal distribution.

The top teams normalize handcrafted features with a quantile transform before use (SPEC §8);
it also tames the heavy tails of counts and gaps.
"""
from __future__ import annotations

import numpy as np
from sklearn.preprocessing import QuantileTransformer

from ubp.features.table import feature_matrix, load_or_build
from ubp.models.base import EmbedContext


def quantile_normal(x: np.ndarray, n_quantiles: int = 1000, subsample: int = 200_000, seed: int = 0) -> np.ndarray:
    """Each column mapped through its empirical CDF to a standard normal (deterministic for a seed)."""
    n = x.shape[0]
    qt = QuantileTransformer(n_quantiles=max(1, min(int(n_quantiles), n)), output_distribution="normal",
                             subsample=int(subsample), random_state=int(seed), copy=True)
    return qt.fit_transform(x.astype(np.float64)).astype(np.float32)


def embed(ctx: EmbedContext, cfg: dict) -> np.ndarray:
    x = feature_matrix(load_or_build(ctx))
    return quantile_normal(x, cfg.get("n_quantiles", 1000), cfg.get("subsample", 200_000), cfg.get("seed", 0))
