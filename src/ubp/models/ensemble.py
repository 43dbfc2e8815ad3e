"""The ensemble of other profiles as a profile (SPEC §9.11): see `ubp.ensemble` for what it does.

Settings come from params.yaml's top-level `ensemble:` section (`inherits: ensemble`). The embed
stage calls `write_embeddings`, which writes the matrix one source at a time into the output file
(at 1M clients x 2,048 columns it is never whole in memory); `embed` returns the same bytes in
memory. There is no `standardize`: each source's `norm` in `sources` says how it is normalised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ubp import schema
from ubp.config import as_dict
from ubp.models.base import EmbedContext, EmbeddingConfig

READS = ("embeddings",)


def _default_sources() -> dict:
    return {"features": {"norm": "none", "center": False}, "affinity": {"norm": "l2"}}


@dataclass(frozen=True)
class Config(EmbeddingConfig):
    # In concatenation order: names, or name -> {weight, pca, norm, center} (checked by ubp.ensemble.parse_sources).
    sources: tuple[str, ...] | dict[str, dict | None] = field(default_factory=_default_sources)
    max_dim: int = schema.MAX_EMBEDDING_DIM
    balance: Literal["source", "dimension", "none"] = "none"
    n_quantiles: int = 1000  # of the `quantile` norm
    subsample: int = 200_000
    embeddings_dir: str | None = None  # where stored sources are (None: embeddings/), e.g. for tests
    params_file: str | None = None  # where the sources' settings are (None: params.yaml), e.g. for tests


def ensemble_cfg(cfg: Config) -> dict:
    """cfg as the plain mapping ubp.ensemble reads (every key given: its DEFAULTS are never used here)."""
    return {k: v for k, v in as_dict(cfg).items() if v is not None and k != "device"}


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    from ubp.ensemble import build

    return build(ctx, ensemble_cfg(cfg))


def write_embeddings(ctx: EmbedContext, cfg: Config, path: Path) -> tuple[int, int]:
    from ubp.ensemble import write

    return write(ctx, ensemble_cfg(cfg), path)
