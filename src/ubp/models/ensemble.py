"""The ensemble of other profiles as a profile (SPEC §9.11): see `ubp.ensemble` for what it does.

Settings come from params.yaml's top-level `ensemble:` section (`inherits: ensemble`); cfg may also
carry `embeddings_dir` (default `embeddings/`) and `params_file` (default `params.yaml`, where the
sources' own settings are read), e.g. for tests. The embed stage calls `write_embeddings`, which
writes the matrix one source at a time into the output file (at 1M clients x 2,048 columns it is
never whole in memory); `embed` returns the same bytes in memory.
"""
from pathlib import Path

import numpy as np

from ubp.ensemble import build, write
from ubp.io import UbpError
from ubp.models.base import EmbedContext


def embed(ctx: EmbedContext, cfg: dict) -> np.ndarray:
    return build(ctx, cfg)


def write_embeddings(ctx: EmbedContext, cfg: dict, path: Path) -> tuple[int, int]:
    if cfg.get("standardize", False):
        raise UbpError("params.yaml: the ensemble cannot be standardised as a whole (standardize: true); "
                       "choose each source's norm in ensemble.sources instead")
    return write(ctx, cfg, path)
