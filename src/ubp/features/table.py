"""The feature table for an EmbedContext: read the stage's output when it matches, else build it."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ubp import schema
from ubp.io import UbpError

log = logging.getLogger("ubp.features")


def load_features(path: Path, client_ids: np.ndarray) -> pd.DataFrame:
    """features.parquet reordered to `client_ids`; an error when the ids differ."""
    path = Path(path)
    if not path.is_file():
        raise UbpError(f"{path}: file not found (run `python -m ubp features` first)")
    table = pd.read_parquet(path)
    if schema.CLIENT_ID not in table.columns:
        raise UbpError(f"{path}: no '{schema.CLIENT_ID}' column")
    ids = np.asarray(client_ids, dtype=np.int64)
    stored = table[schema.CLIENT_ID].to_numpy(np.int64)
    if len(stored) != len(ids) or not np.array_equal(np.sort(stored), np.sort(ids)):
        raise UbpError(f"{path}: its {len(stored)} client ids are not the {len(ids)} requested "
                       "(re-run `python -m ubp features`)")
    if np.array_equal(stored, ids):
        return table.reset_index(drop=True)
    row = pd.Series(np.arange(len(stored)), index=stored)
    return table.iloc[row.loc[ids].to_numpy()].reset_index(drop=True)


def _stored_cutoff(path: Path) -> str | None:
    from ubp.features.build import META_FILE
    meta = Path(path).with_name(META_FILE)
    return json.loads(meta.read_text()).get("cutoff") if meta.is_file() else None


def load_or_build(ctx, cfg: dict | None = None) -> pd.DataFrame:
    """The features of ctx.client_ids as of ctx.cutoff (client_id first, rows in ctx.client_ids order).

    Uses ctx.features_path when it exists and was built for the same cutoff; otherwise computes
    the table from ctx.events_dir with the settings in `cfg` (windows, session_gap_minutes, ...).
    """
    from ubp.features.build import build_features, settings_from

    path = ctx.features_path
    if path is not None and Path(path).is_file():
        cutoff = _stored_cutoff(path)
        if cutoff in (None, ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)):
            return load_features(path, ctx.client_ids)
        log.warning("%s was built for cutoff %s, not %s: computing the features again", path, cutoff, ctx.cutoff)
    return build_features(ctx.events_dir, ctx.properties_path, ctx.client_ids, ctx.cutoff, **settings_from(cfg))


def feature_matrix(table: pd.DataFrame) -> np.ndarray:
    """The feature columns (everything but client_id) as float32."""
    return table.drop(columns=[schema.CLIENT_ID]).to_numpy(np.float32)
