"""What every embedding method receives, and the one way a method says it cannot run here."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from ubp import schema


class ProfileUnavailable(Exception):
    """The method cannot run on this data (e.g. the oracle on real data); the stage records why."""


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
    feature_settings: dict = field(default_factory=dict)
    sequences_dir: Path | None = None  # the sequences stage's output (ubp.sequences.load_or_build checks it fits)
    sequence_settings: dict = field(default_factory=dict)  # params.yaml's `sequences:` (to build them when needed)
    seed: int = 0
    device: str = "cpu"
    # Filled by the method for the record: "curve" (a list of per-epoch dicts, saved as
    # training_curve.csv beside the embedding) and any scalar facts worth keeping in meta.json.
    info: dict = field(default_factory=dict)

    def events(self, event_type: str) -> Path:
        return self.events_dir / f"{event_type}.parquet"
