"""The ensemble profile (SPEC §9.11, seed 001 §3.3): other profiles' embeddings, each normalised on
its own (`ubp.combine.blocks`), optionally reduced by PCA, weighted and concatenated.

A combined profile (`combined.ensemble: {method: ensemble, inherits: ensemble}`), written to
`combined/ensemble/` by `python -m ubp combine ensemble`. Its settings are the `ensemble:` section,
this module's `Config`:

    ensemble:
      sources: [features, affinity]            # base profiles, in concatenation order
      per_source:                              # any of weight, pca, norm, center (default: auto)
        features: {norm: none, center: false}
        affinity: {norm: l2}
      balance: none

A new method is one more name in `sources` (`python -m ubp select` proposes them). The output is
float16; more than `max_dim` columns is an error naming each source's width. At the real data's size
(1M clients x up to 2,048 columns) `write` fills a memory-mapped .npy one source at a time, never
holding the whole matrix (the same bytes as the in-memory `build`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np

from ubp import schema
from ubp.combine.blocks import check_width, combine, fill, resolve_norm, width
from ubp.combine.sources import Loaded, SourceSettings, check_names, check_sources, listed, load_source
from ubp.io import UbpError
from ubp.models.base import EmbedContext
from ubp.params import PARAMS_FILE, load_params

READS = ("embeddings",)


@dataclass(frozen=True)
class Config:
    """params.yaml's `ensemble:` section (the only home of its defaults)."""
    sources: tuple[str, ...] = ("features", "affinity")  # base profiles, in concatenation order
    # name -> settings; a source not named here gets SourceSettings' defaults (norm auto, weight 1, centred)
    per_source: Mapping[str, SourceSettings] = field(default_factory=lambda: MappingProxyType({}))
    max_dim: int = schema.MAX_EMBEDDING_DIM  # at most this many columns (and never more than 2,048)
    balance: Literal["source", "dimension", "none"] = "none"
    seed: int = 0  # of the quantile map's subsample and of PCA
    n_quantiles: int = 1000  # of the `quantile` norm
    subsample: int = 200_000
    embeddings_dir: str | None = None  # where stored sources are (None: embeddings/), e.g. for tests
    params_file: str | None = None  # where the sources' settings are (None: params.yaml), e.g. for tests

    def __post_init__(self):
        check_sources(self.sources, self.per_source)
        if self.max_dim < 1 or self.n_quantiles < 1 or self.subsample < 1:
            raise UbpError(f"params.yaml: ensemble needs max_dim, n_quantiles and subsample >= 1, got "
                           f"{self.max_dim}, {self.n_quantiles} and {self.subsample}")


def load_all(ctx: EmbedContext, cfg) -> list[Loaded]:
    """Every source of cfg (an ensemble or stacked Config) for ctx.client_ids (stored ones mapped, not
    read); what each source is goes to ctx.info["sources"]."""
    params = load_params(cfg.params_file or PARAMS_FILE)
    check_names(cfg, params)
    embeddings_dir = Path(cfg.embeddings_dir or schema.EMBEDDINGS_DIR)
    loaded, skipped = [], []
    for source in listed(cfg):
        item = load_source(source, ctx, params, embeddings_dir)
        (skipped.append(source.name) if item is None else loaded.append(item))
    if not loaded:
        raise UbpError("ensemble: no source left to combine (all were skipped)")
    ctx.info["sources"] = {
        item.source.name: {"method": item.method, "norm": resolve_norm(item.source.norm, item.method),
                           "weight": item.source.weight, "pca": item.source.pca, "dim_in": int(item.x.shape[1]),
                           "dim": width(item), "from": item.origin,
                           "imputed_clients": int((~item.present).sum())}
        for item in loaded
    }
    if skipped:
        ctx.info["skipped_sources"] = skipped
    return loaded


def build(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    """The ensemble of cfg.sources for ctx.client_ids, in memory; facts per source go to ctx.info."""
    return combine(load_all(ctx, cfg), len(ctx.client_ids), cfg)


def write(ctx: EmbedContext, cfg: Config, path: Path) -> tuple[int, int]:
    """`build`'s matrix written to the .npy `path` one source at a time (same bytes); its shape."""
    loaded = load_all(ctx, cfg)
    total = check_width(loaded, min(cfg.max_dim, schema.MAX_EMBEDDING_DIM))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(ctx.client_ids), total))
    fill(out, loaded, cfg)
    out.flush()
    del out
    return len(ctx.client_ids), total


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    """The method's interface (ubp.models.base): the profile in memory."""
    return build(ctx, cfg)


def write_embeddings(ctx: EmbedContext, cfg: Config, path: Path) -> tuple[int, int]:
    """What the combine stage calls: the profile written block by block (at 1M x 2,048 never whole)."""
    return write(ctx, cfg, path)
