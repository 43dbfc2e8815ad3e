"""The ensemble of other profiles as a profile (SPEC §9.11): see `ubp.ensemble` for what it does.

Settings come from params.yaml's top-level `ensemble:` section (`inherits: ensemble`); cfg may also
carry `embeddings_dir` (default `embeddings/`) and `params_file` (default `params.yaml`, where the
sources' own settings are read), e.g. for tests.
"""
import numpy as np

from ubp.ensemble import build
from ubp.models.base import EmbedContext


def embed(ctx: EmbedContext, cfg: dict) -> np.ndarray:
    return build(ctx, cfg)
