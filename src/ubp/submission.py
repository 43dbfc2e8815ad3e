"""Competition entries (SPEC §7): write one for any profile, and validate any directory.

    python -m ubp submit <profile> --out DIR   # re-embed from ALL events, validate, write
    python -m ubp submit <profile> --out DIR --from-input   # package the local (input-only) profile
    python -m ubp validate DIR [--relevant PATH]
"""
from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from ubp import schema
from ubp.embed import compute
from ubp.features.build import FeaturesConfig, connect_for
from ubp.io import UbpError, atomic_dir, load_npy
from ubp.models.base import EmbedContext, ProfileUnavailable
from ubp.params import load_params, model_config, profile_dir
from ubp.sequences import SequencesConfig

log = logging.getLogger("ubp.submission")


def validate(entry_dir: Path, relevant_clients: np.ndarray | None = None) -> None:
    """Raise UbpError naming the first rule the entry breaks; return quietly if it is valid."""
    entry_dir = Path(entry_dir)
    ids_path, emb_path = entry_dir / "client_ids.npy", entry_dir / "embeddings.npy"
    ids, emb = load_npy(ids_path), load_npy(emb_path)
    if ids.ndim != 1:
        raise UbpError(f"{ids_path}: client_ids must be 1-D, got shape {ids.shape}")
    if ids.dtype != np.int64:
        raise UbpError(f"{ids_path}: client_ids must be int64, got {ids.dtype}")
    if emb.ndim != 2:
        raise UbpError(f"{emb_path}: embeddings must be 2-D, got shape {emb.shape}")
    if emb.dtype != np.float16:
        raise UbpError(f"{emb_path}: embeddings must be float16, got {emb.dtype}")
    if emb.shape[1] > schema.MAX_EMBEDDING_DIM:
        raise UbpError(f"{emb_path}: {emb.shape[1]} columns, at most {schema.MAX_EMBEDDING_DIM} allowed")
    if emb.shape[0] != ids.shape[0]:
        raise UbpError(f"{emb_path}: {emb.shape[0]} rows but {ids_path.name} has {ids.shape[0]} ids")
    bad = ~np.isfinite(emb)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise UbpError(f"{emb_path}: NaN or inf values ({int(bad.sum())} of them; first in row {row})")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise UbpError(f"{ids_path}: duplicate client ids ({int((counts > 1).sum())}; e.g. {int(unique[counts > 1][0])})")
    if relevant_clients is not None:
        missing = np.setdiff1d(relevant_clients, ids)
        if len(ids) != len(relevant_clients) or len(missing):
            extra = np.setdiff1d(ids, relevant_clients)
            raise UbpError(
                f"{ids_path}: ids must be exactly the {len(relevant_clients)} relevant clients; "
                f"{len(missing)} missing, {len(extra)} not relevant"
                + (f" (e.g. missing {int(missing[0])})" if len(missing) else "")
            )


def full_context(canonical_dir: Path = schema.CANONICAL_DIR, sequence_settings: SequencesConfig = SequencesConfig(),
                 feature_settings: FeaturesConfig = FeaturesConfig()) -> EmbedContext:
    """Profiles for an entry: every event, as of just after the last one. No stored features or
    sequences (the stages' are as of the split): methods compute them with params.yaml's
    `features:` / `sequences:` settings."""
    events = [f"SELECT max(timestamp) AS t FROM read_parquet('{canonical_dir / f'{e}.parquet'}')" for e in schema.EVENT_TYPES]
    with connect_for(feature_settings) as con:
        last = con.execute(f"SELECT max(t) FROM ({' UNION ALL '.join(events)})").fetchone()[0]
    if not isinstance(last, datetime):
        raise UbpError(f"{canonical_dir}: no events to build an entry from")
    return EmbedContext(
        client_ids=load_npy(canonical_dir / schema.RELEVANT_CLIENTS_FILE).astype(np.int64),
        events_dir=canonical_dir,
        properties_path=canonical_dir / f"{schema.PROPERTIES}.parquet",
        cutoff=last + timedelta(seconds=1),
        feature_settings=feature_settings,
        sequence_settings=sequence_settings,
    )


def write_profile_files(directory: Path, ids: np.ndarray, emb: np.ndarray, meta: dict) -> None:
    np.save(directory / "client_ids.npy", np.asarray(ids, dtype=np.int64))
    np.save(directory / "embeddings.npy", emb)
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def submit(name: str, out_dir: Path, params: dict, from_input: bool = False) -> None:
    relevant = load_npy(schema.CANONICAL_DIR / schema.RELEVANT_CLIENTS_FILE)
    if from_input:
        source = profile_dir(params, name)
        if (source / "SKIPPED.txt").exists():
            raise UbpError(f"{source}: profile '{name}' was skipped: {(source / 'SKIPPED.txt').read_text().strip()}")
        ids, emb = load_npy(source / "client_ids.npy"), load_npy(source / "embeddings.npy")
        meta = {"profile": name, "events": "input only (local evaluation)"}
    else:
        cfg = model_config(params, name)
        ctx = full_context(sequence_settings=SequencesConfig.from_params(params),
                           feature_settings=FeaturesConfig.from_params(params))
        log.info("entry %s: embedding %d clients from all events up to %s", name, len(ctx.client_ids), ctx.cutoff)
        try:
            emb = compute(name, cfg, ctx)
        except ProfileUnavailable as exc:
            raise UbpError(f"profile '{name}' cannot make an entry: {exc}") from None
        ids = ctx.client_ids
        meta = {"profile": name, "events": "all", "cutoff": ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)}
    with atomic_dir(out_dir) as tmp:  # validated before it replaces out_dir: a refused entry leaves nothing
        write_profile_files(tmp, ids, emb, meta)
        validate(tmp, relevant)
    log.info("entry written to %s and validated: %d x %d", out_dir, *emb.shape)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ubp", description="Write or validate a competition entry.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_submit = sub.add_parser("submit", help="write a competition entry for a profile")
    p_submit.add_argument("profile")
    p_submit.add_argument("--out", type=Path, required=True)
    p_submit.add_argument("--from-input", action="store_true", help="package the local, input-only embedding")
    p_validate = sub.add_parser("validate", help="check an entry directory")
    p_validate.add_argument("entry", type=Path)
    p_validate.add_argument("--relevant", type=Path, default=schema.CANONICAL_DIR / schema.RELEVANT_CLIENTS_FILE,
                            help="relevant_clients.npy to check the ids against ('none' to skip)")
    args = parser.parse_args(argv)
    if args.command == "submit":
        submit(args.profile, args.out, load_params(), args.from_input)
    else:
        relevant = None if str(args.relevant) == "none" else load_npy(args.relevant)
        validate(args.entry, relevant)
        print(f"{args.entry}: valid entry")
    return 0
