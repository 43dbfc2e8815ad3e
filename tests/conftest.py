"""Shared fixtures: one tiny generated dataset taken through ingest, split and targets per session."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from ubp import schema
from ubp.models.base import EmbedContext

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE = REPO.parent / "shared" / "conformance"


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """generate(TINY) -> ingest -> split -> targets, in a session temp dir."""
    from ubp.data.ingest import ingest
    from ubp.data.split import split
    from ubp.data.synthetic import TINY, generate
    from ubp.data.targets import build_targets

    root = tmp_path_factory.mktemp("tiny")
    dirs = {name: root / name for name in ("synthetic", "canonical", "split", "targets")}
    generate(dirs["synthetic"], TINY)
    ingest(dirs["synthetic"], dirs["canonical"])
    split(dirs["canonical"], dirs["split"])
    build_targets(dirs["canonical"], dirs["split"], dirs["targets"])
    return dirs


@pytest.fixture(scope="session")
def tiny_context(tiny_dirs) -> EmbedContext:
    import json

    split_info = json.loads((tiny_dirs["split"] / schema.SPLIT_FILE).read_text())
    return EmbedContext(
        client_ids=np.load(tiny_dirs["canonical"] / schema.RELEVANT_CLIENTS_FILE),
        events_dir=tiny_dirs["split"] / "input",
        properties_path=tiny_dirs["canonical"] / f"{schema.PROPERTIES}.parquet",
        cutoff=datetime.strptime(split_info["train_target_start"], schema.TIMESTAMP_FORMAT),
        synthetic_dir=tiny_dirs["synthetic"],
        targets_dir=tiny_dirs["targets"],
    )
