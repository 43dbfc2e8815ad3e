"""What every embedding method receives and declares.

A method module `ubp.models.<method>` has `embed(ctx, cfg) -> np.ndarray`, a frozen dataclass
`Config` (extending `EmbeddingConfig`, or `_training.TrainingConfig` for a network: its fields and
defaults are the method's only settings, built from params.yaml by `ubp.params.model_config`), and
optional traits read through `ubp.models.traits` (defaults below, so a new method edits no list):

* `READS` — the inputs it opens, names of `INPUTS` (the embed stage's exact DVC deps come from it);
* `TABULAR` — its output is a table of handcrafted counts/rates (the ensemble quantile-maps it);
* `AS_OF` — it describes clients from the events before `ctx.cutoff` only, so it can be computed
  as of an earlier date (stacking's shifted sources); the oracle cannot.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from ubp import schema
from ubp.features.sources import FeaturesConfig
from ubp.sequences import SequencesConfig

# What a method may read, each one field of EmbedContext (or, for `embeddings`, other profiles).
INPUTS = {
    "events": "ctx.events_dir: the five event files before the cutoff",
    "properties": "ctx.properties_path: product_properties (category, price, name of each sku)",
    "features": "ctx.features_path: the features stage's table",
    "sequences": "ctx.sequences_dir: the sequences stage's output",
    "targets": "ctx.targets_dir: the open tasks' label sets",
    "synthetic": "ctx.synthetic_dir: the generator's latent state (synthetic data only)",
    "embeddings": "other profiles' embeddings (and, when one must be computed, what its method reads)",
}
# Trait defaults: a method that declares nothing is assumed to read every input but other profiles.
READS = ("events", "properties", "features", "sequences", "targets", "synthetic")
TABULAR = False
AS_OF = True


class ProfileUnavailable(Exception):
    """The method cannot run on this data (e.g. the oracle on real data); the stage records why."""


@dataclass(frozen=True)
class EmbeddingConfig:
    """params.yaml's `embedding:` section, which every non-neural profile inherits."""
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class EmbedContext:
    client_ids: np.ndarray  # int64, the clients to embed; rows of the result follow this order
    events_dir: Path  # <event>.parquet for the five event types (split input, or all events)
    properties_path: Path  # canonical product_properties.parquet
    cutoff: datetime  # profiles describe clients as of this instant (events are all before it)
    synthetic_dir: Path = schema.SYNTHETIC_DIR
    targets_dir: Path = schema.TARGETS_DIR  # label sets of the tasks (methods may read the open tasks' only)
    # Precomputed per-client tables for exactly these events and cutoff (None: methods compute them).
    features_path: Path | None = None  # ubp.features.table.load_or_build refuses it unless it fits
    # params.yaml's `features:` (settings to build or check the features; memory_limit/temp_directory for DuckDB)
    feature_settings: FeaturesConfig = FeaturesConfig()
    sequences_dir: Path | None = None  # the sequences stage's output (ubp.sequences.load_or_build checks it fits)
    sequence_settings: SequencesConfig = SequencesConfig()  # params.yaml's `sequences:` (to build them when needed)
    # Filled by the method for the record: "curve" (a list of per-epoch dicts, saved as
    # training_curve.csv beside the embedding) and any scalar facts worth keeping in meta.json.
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        # A params section passed as its raw dict would fail deep inside a feature family, minutes in.
        for name, kind in (("feature_settings", FeaturesConfig), ("sequence_settings", SequencesConfig)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"EmbedContext.{name} must be a {kind.__name__} (build it with "
                                f"{kind.__name__}.from_params), not {type(getattr(self, name)).__name__}")

    def events(self, event_type: str) -> Path:
        return self.events_dir / f"{event_type}.parquet"


STANDARDIZE_COLUMNS = 16  # float64 statistics a block of columns at a time: a float32 copy, not a float64 one


def standardize(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Each column to mean 0, sd 1 over the rows (a near-constant column is only centred), as float32
    into `out` (which may be x itself) or a new array. The one standardisation of every method's
    output and input (embed's `model.standardize`, the tabular networks' input, the oracle)."""
    out = np.empty(x.shape, dtype=np.float32) if out is None else out
    for c in range(0, x.shape[1], STANDARDIZE_COLUMNS):
        block = np.asarray(x[:, c:c + STANDARDIZE_COLUMNS], dtype=np.float64)
        std = block.std(axis=0)
        out[:, c:c + STANDARDIZE_COLUMNS] = (block - block.mean(axis=0)) / np.where(std > 1e-6, std, 1.0)
    return out
