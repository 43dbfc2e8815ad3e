"""The feature table for an EmbedContext: the stage's output when the context names it, else built.

A stored table is used only when its features.json records the context's cutoff and the settings
of params.yaml's `features:` section (ctx.feature_settings, a FeaturesConfig); otherwise it is refused, never silently
replaced: a context that wants the features as of another date (stacked's shifted cutoff, a
competition entry over all events) leaves `features_path` unset and gets them computed.
"""
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


def check_stored(path: Path, cutoff: str, settings: dict) -> None:
    """UbpError unless the features.json beside `path` records this cutoff and these settings
    (`recorded_settings` of a FeaturesConfig)."""
    from ubp.features.build import META_FILE

    path = Path(path)
    meta_path = path.with_name(META_FILE)
    if not meta_path.is_file():
        raise UbpError(f"{path}: no {META_FILE} beside it, so the cutoff and settings it was built for are "
                       f"unknown; asked for cutoff {cutoff} (re-run `python -m ubp features`)")
    meta = json.loads(meta_path.read_text())
    if meta.get("cutoff") != cutoff:
        raise UbpError(f"{path}: built for cutoff {meta.get('cutoff')} ({meta_path}), but cutoff {cutoff} was "
                       "asked for (re-run `python -m ubp features`, or compute the features for that cutoff)")
    if meta.get("settings") != settings:
        raise UbpError(f"{path}: built with settings {meta.get('settings')} ({meta_path}), but params.yaml's "
                       f"features: section asks for {settings} (re-run `python -m ubp features`)")


def load_or_build(ctx) -> pd.DataFrame:
    """The features of ctx.client_ids as of ctx.cutoff (client_id first, rows in ctx.client_ids order),
    with the settings of ctx.feature_settings (params.yaml's `features:`).

    ctx.features_path set: that table, checked by `check_stored` (an error if it does not fit).
    ctx.features_path None: computed from ctx.events_dir.
    """
    from ubp.features.build import build_features, recorded_settings

    cfg = ctx.feature_settings
    if ctx.features_path is not None:
        check_stored(ctx.features_path, ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT), recorded_settings(cfg))
        return load_features(ctx.features_path, ctx.client_ids)
    log.info("features: computing the table of %d clients as of %s from %s", len(ctx.client_ids), ctx.cutoff,
             ctx.events_dir)
    return build_features(ctx.events_dir, ctx.properties_path, ctx.client_ids, ctx.cutoff, cfg)


def feature_matrix(table: pd.DataFrame) -> np.ndarray:
    """The feature columns (everything but client_id) as float32."""
    return table.drop(columns=[schema.CLIENT_ID]).to_numpy(np.float32)
