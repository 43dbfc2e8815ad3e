"""Competition entries (SPEC §7): write one for any profile, and validate any directory.

    python -m ubp submit <profile> --out DIR   # re-embed from ALL events, validate, write
    python -m ubp submit <profile> --out DIR --from-input   # package the local (input-only) profile
    python -m ubp validate DIR [--relevant PATH]
"""
from __future__ import annotations

import argparse
import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from ubp import schema
from ubp.embed import compute
from ubp import profile_store as store
from ubp.features.build import FeaturesConfig, connect_for
from ubp.io import UbpError, load_npy
from ubp.models.base import EmbedContext, ProfileUnavailable
from ubp.params import load_params, model_config, profile_dir
from ubp.sequences import SequencesConfig

log = logging.getLogger("ubp.submission")


def validate(entry_dir: Path, relevant_clients: np.ndarray | None = None) -> None:
    """Raise UbpError naming the first rule the entry breaks (SPEC §7); return quietly if it is valid."""
    store.open_profile(entry_dir, relevant_clients, entry=True)


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


def submit(name: str, out_dir: Path, params: dict, from_input: bool = False) -> None:
    relevant = load_npy(schema.CANONICAL_DIR / schema.RELEVANT_CLIENTS_FILE)
    if from_input:
        source = profile_dir(params, name)
        if store.skipped(source) is not None:
            raise UbpError(f"{source}: profile '{name}' was skipped: {store.skipped(source)}")
        stored = store.open_profile(source)  # a memory map: copied file to file, never loaded whole
        meta = {"profile": name, "events": "input only (local evaluation)"}

        def copy(path: Path) -> tuple[int, int]:
            shutil.copyfile(source / store.EMBEDDINGS, path)
            return stored.shape

        shape = store.write(out_dir, stored.client_ids, meta, fill=copy, check=lambda tmp: validate(tmp, relevant))
    else:
        cfg = model_config(params, name)
        ctx = full_context(sequence_settings=SequencesConfig.from_params(params),
                           feature_settings=FeaturesConfig.from_params(params))
        log.info("entry %s: embedding %d clients from all events up to %s", name, len(ctx.client_ids), ctx.cutoff)
        try:
            emb = compute(name, cfg, ctx)
        except ProfileUnavailable as exc:
            raise UbpError(f"profile '{name}' cannot make an entry: {exc}") from None
        meta = {"profile": name, "events": "all", "cutoff": ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)}
        # validated before it replaces out_dir: a refused entry leaves nothing
        shape = store.write(out_dir, ctx.client_ids, meta, emb, check=lambda tmp: validate(tmp, relevant))
    log.info("entry written to %s and validated: %d x %d", out_dir, *shape)


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
