"""The handcrafted behavioural features (SPEC §9.2) as a profile, quantile-transformed to a normal distribution.

The top teams normalize handcrafted features with a quantile transform before use (SPEC §8);
it also tames the heavy tails of counts and gaps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.preprocessing import QuantileTransformer

from ubp.features.table import feature_matrix, load_or_build
from ubp.models.base import EmbedContext, EmbeddingConfig

READS = ("features",)
TABULAR = True


# Columns transformed per scikit-learn call: it works on a float64 copy, so one call over all
# columns of a 1M x 400 table would hold ~6 GB of copies; a block of columns holds ~0.3 GB.
QUANTILE_COLUMNS = 16


@dataclass(frozen=True)
class Config(EmbeddingConfig):
    n_quantiles: int = 1000
    subsample: int = 200_000  # rows each column's quantiles are estimated from (seeded)


def quantile_normal(x: np.ndarray, n_quantiles: int = 1000, subsample: int = 200_000, seed: int = 0,
                    out: np.ndarray | None = None) -> np.ndarray:
    """Each column mapped through its empirical CDF to a standard normal (deterministic for a seed),
    as float32 into `out` (may be `x` itself). Done QUANTILE_COLUMNS columns at a time: each column's
    map is its own and every call draws the same `subsample` rows (same seed), so the result is the
    one a single call over all columns gives, to the bit."""
    n = x.shape[0]
    out = np.empty(x.shape, np.float32) if out is None else out
    for c in range(0, x.shape[1], QUANTILE_COLUMNS):
        qt = QuantileTransformer(n_quantiles=max(1, min(int(n_quantiles), n)), output_distribution="normal",
                                 subsample=int(subsample), random_state=int(seed), copy=True)
        out[:, c:c + QUANTILE_COLUMNS] = qt.fit_transform(np.asarray(x[:, c:c + QUANTILE_COLUMNS], dtype=np.float64))
    return out


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    return quantile_normal(feature_matrix(load_or_build(ctx)), cfg.n_quantiles, cfg.subsample, cfg.seed)
