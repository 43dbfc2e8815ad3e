"""The `embed@<profile>` stage: run one embedding method, write `embeddings/<profile>/`.

The directory is SPEC §7's submission layout (`ubp.profile_store`): `client_ids.npy` (int64),
`embeddings.npy` (float16, rows aligned), `meta.json`, a neural profile's `training_curve.csv`; a
method that cannot run on this data writes only `SKIPPED.txt` with the reason, so the graph still
runs end to end on a user's real data. Its bytes depend only on the inputs and params; the stage's
wall time (and each epoch's) goes to `metrics/embed/<profile>.json`.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from ubp import schema
from ubp.config import as_dict
from ubp import profile_store as store
from ubp.features.sources import FeaturesConfig
from ubp.io import UbpError, load_json, load_npy, save_json
from ubp.models import get_method, method_of
from ubp.models.base import EmbedContext, ProfileUnavailable, standardize
from ubp.params import load_params, model_config, profile_dir, profile_section
from ubp.sequences import SequencesConfig

log = logging.getLogger("ubp.embed")
FLOAT16_MAX = float(np.finfo(np.float16).max)
EMBED_METRICS_SUBDIR = "embed"  # metrics/embed/<profile>.json: the embed stage's wall time


def local_context(split_dir: Path = schema.SPLIT_DIR, canonical_dir: Path = schema.CANONICAL_DIR,
                  synthetic_dir: Path = schema.SYNTHETIC_DIR, features_dir: Path = schema.FEATURES_DIR,
                  sequences_dir: Path = schema.SEQUENCES_DIR, sequence_settings: SequencesConfig = SequencesConfig(),
                  feature_settings: FeaturesConfig = FeaturesConfig()) -> EmbedContext:
    """Profiles for local evaluation: input events only, as of the train-target start. The settings
    are params.yaml's `sequences:` and `features:` sections (never a profile's own: a stored table
    must match the stage's settings, and one computed again must be computed the same way)."""
    split = load_json(split_dir / schema.SPLIT_FILE)
    return EmbedContext(
        client_ids=load_npy(canonical_dir / schema.RELEVANT_CLIENTS_FILE).astype(np.int64),
        events_dir=split_dir / "input",
        properties_path=canonical_dir / f"{schema.PROPERTIES}.parquet",
        cutoff=datetime.strptime(split["train_target_start"], schema.TIMESTAMP_FORMAT),
        synthetic_dir=synthetic_dir,
        features_path=features_dir / "features.parquet",
        feature_settings=feature_settings,
        sequences_dir=sequences_dir,
        sequence_settings=sequence_settings,
    )


def params_context(params: dict) -> EmbedContext:
    """local_context with params.yaml's `sequences:` and `features:` sections as their typed configs:
    what the embed and combine stages (and the benchmarks that embed like them) run with."""
    return local_context(sequence_settings=SequencesConfig.from_params(params),
                         feature_settings=FeaturesConfig.from_params(params))


def compute(name: str, cfg, ctx: EmbedContext) -> np.ndarray:
    """Run the profile's method (the one whose `Config` cfg is) and check what it returns; float16,
    ready to save.

    `standardize: true` (every neural profile inherits it from `model:`) publishes each column
    centred and scaled over the embedded clients: an affine map that keeps all the information, but
    the fixed downstream network is not scale-free. Network states sit in narrow ranges (GRU states
    near ±1 differing by ~0.1); on the default data standardising lifted gru_ae's six-task sum
    3.75 -> 4.26, next_event's 4.29 -> 4.34, contrastive's 4.58 -> 4.64, and dcn's propensity_sku
    AUROC 0.56 -> 0.69 (same weights, same evaluator)."""
    matrix = np.asarray(get_method(method_of(cfg)).embed(ctx, cfg))
    if getattr(cfg, "standardize", False) and matrix.ndim == 2 and len(matrix):
        matrix = standardize(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != len(ctx.client_ids):
        raise UbpError(f"profile '{name}': method returned shape {matrix.shape}, expected ({len(ctx.client_ids)}, d)")
    if matrix.shape[1] > schema.MAX_EMBEDDING_DIM:
        raise UbpError(f"profile '{name}': {matrix.shape[1]} dimensions, the limit is {schema.MAX_EMBEDDING_DIM}")
    if not np.isfinite(matrix).all():
        raise UbpError(f"profile '{name}': the embedding has NaN or inf values")
    if np.abs(matrix).max(initial=0.0) > FLOAT16_MAX:
        raise UbpError(f"profile '{name}': values beyond float16's range ({FLOAT16_MAX:g}); scale them in the method")
    return matrix.astype(np.float16)


def config_record(cfg) -> dict:
    """A Config as meta.json records it (the ensemble compares it to decide whether a stored source is stale)."""
    return json.loads(json.dumps(as_dict(cfg)))


def profile_meta(name: str, cfg, ctx: EmbedContext, dim: int) -> dict:
    # events + cutoff + config say what the embedding was made from: the ensemble reuses a stored
    # source only when all three match its own context and params (ubp.combine.sources.load_source).
    info = {key: value for key, value in ctx.info.items() if key != "curve"}
    return {"profile": name, "method": method_of(cfg), "dim": int(dim),
            "events": str(ctx.events_dir), "cutoff": ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT),
            "config": config_record(cfg), **info}


def split_curve(curve: list[dict] | None) -> tuple[list[dict], list]:
    """The training curve without its wall times (they would make the output's bytes differ from run
    to run) and the per-epoch wall times, which go to the timing file."""
    curve = list(curve or [])
    return [{k: v for k, v in row.items() if k != "seconds"} for row in curve], [row.get("seconds") for row in curve]


def timing_path(name: str, metrics_dir: Path = schema.METRICS_DIR) -> Path:
    """metrics/embed/<profile>.json: the stage's wall time, a `cache: false` metric outside the
    profile's directory, so `dvc metrics show` has it and the embedding's hash does not."""
    return Path(metrics_dir) / EMBED_METRICS_SUBDIR / f"{name}.json"


def write_timing(path: Path | None, name: str, seconds: float, epoch_seconds: list | None = None) -> None:
    if path is None:
        return
    timing = {"profile": name, "seconds": round(seconds, 2)}
    if epoch_seconds:
        timing["epoch_seconds"] = epoch_seconds
    save_json(path, timing)


def write_computed(name: str, cfg, ctx: EmbedContext, out_dir: Path, timing: Path | None, start: float) -> None:
    """Compute the profile and write its directory (or SKIPPED.txt) and its wall time since `start`:
    the end of both the embed and the combine stage."""
    try:
        matrix = compute(name, cfg, ctx)
    except ProfileUnavailable as exc:
        log.warning("profile %s skipped: %s", name, exc)
        store.write_skipped(out_dir, str(exc))
        write_timing(timing, name, time.time() - start)
        return
    seconds = time.time() - start
    curve, epoch_seconds = split_curve(ctx.info.get("curve"))
    store.write(out_dir, ctx.client_ids, profile_meta(name, cfg, ctx, int(matrix.shape[1])), matrix, curve=curve)
    write_timing(timing, name, seconds, epoch_seconds)
    log.info("profile %s: %d x %d in %.1f s", name, matrix.shape[0], matrix.shape[1], seconds)


def run(name: str, params: dict, out_dir: Path | None = None, timing: Path | None = None) -> None:
    """Embed one profile of `models` into its directory (params.profile_dir), and its wall time into
    `timing` if given. Its settings are built (and checked) first: a typo in params.yaml fails before
    any work."""
    if profile_section(params, name) != "models":
        raise UbpError(f"profile '{name}' is built from other profiles (params.yaml combined): "
                       f"run `python -m ubp combine {name}`")
    cfg = model_config(params, name)
    out_dir = Path(out_dir) if out_dir is not None else profile_dir(params, name)
    ctx = params_context(params)
    start = time.time()
    log.info("profile %s: method %s, %d clients, cutoff %s", name, method_of(cfg), len(ctx.client_ids), ctx.cutoff)
    write_computed(name, cfg, ctx, out_dir, timing, start)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ubp embed", description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="a key of params.yaml's models")
    args = parser.parse_args(argv)
    run(args.profile, load_params(), timing=timing_path(args.profile))
    return 0
