"""The `combine@<profile>` stage and its source markers.

    python -m ubp combine <profile>                   # writes combined/<profile>/
    python -m ubp combine <profile> --source <name>   # writes combined/.sources/<profile>/<name>

The first writes a `combined:` profile as `python -m ubp embed` writes a base one (client_ids.npy,
embeddings.npy, meta.json; or SKIPPED.txt), its settings built and checked before any work.

The second is a marker stage (dvc.yaml `<profile>_sources@<name>`, one per source): the md5 of each
file of `embeddings/<name>/`. DVC cannot put a list into a stage's deps, so `combine@<profile>`
depends on the directory of its markers, and DVC links that dependency to every marker stage whose
output lies inside it: the profile re-runs when one of its own sources changes, and for no other
profile's embedding.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import time
from pathlib import Path

from ubp import profile_store as store
from ubp import schema
from ubp.combine.sources import check_names
from ubp.embed import params_context, profile_meta, timing_path, write_computed, write_timing
from ubp.io import UbpError, save_json
from ubp.models import get_method, method_of
from ubp.params import load_params, model_config, profile_dir, profile_section

log = logging.getLogger("ubp.combine")

MARKERS_DIR = schema.COMBINED_DIR / ".sources"


def combined_config(params: dict, name: str):
    """The typed settings of a `combined:` profile (a base profile is refused, naming its command)."""
    if profile_section(params, name) != "combined":
        raise UbpError(f"profile '{name}' is a base profile (params.yaml models): run `python -m ubp embed {name}`")
    cfg = model_config(params, name)
    check_names(cfg, params)
    return cfg


def fingerprint(directory: Path) -> dict[str, str]:
    """The md5 of every file under `directory`, by relative path (sorted)."""
    digests = {}
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        md5 = hashlib.md5()
        with open(path, "rb") as f:
            for piece in iter(lambda: f.read(1 << 24), b""):
                md5.update(piece)
        digests[path.relative_to(directory).as_posix()] = md5.hexdigest()
    return digests


def mark(profile: str, source: str, params: dict, embeddings_dir: Path = schema.EMBEDDINGS_DIR,
         markers_dir: Path = MARKERS_DIR) -> Path:
    """Write the marker of `source` for `profile`: what its stored embedding is, file by file."""
    cfg = combined_config(params, profile)
    if source not in cfg.sources:
        raise UbpError(f"'{source}' is not a source of combined profile '{profile}' (its sources: "
                       f"{', '.join(cfg.sources)}): dvc.yaml's marker stage of {profile} must iterate over them")
    directory = Path(embeddings_dir) / source
    if not directory.is_dir():
        raise UbpError(f"{directory}: no such profile directory (source '{source}' of '{profile}')")
    out = Path(markers_dir) / profile / source
    save_json(out, {"source": source, "files": fingerprint(directory)})
    return out


def check_markers(profile: str, cfg, markers_dir: Path = MARKERS_DIR) -> None:
    """Under DVC every source has its marker (else the stage would not re-run when that source
    changes); a stage run by hand, with no markers at all, is not checked."""
    here = Path(markers_dir) / profile
    missing = [s for s in cfg.sources if here.is_dir() and not (here / s).is_file()]
    if missing:
        raise UbpError(f"{here}: no marker of source(s) {', '.join(missing)} of '{profile}': dvc.yaml needs a "
                       f"stage `foreach:` over {profile}'s sources running `python -m ubp combine {profile} "
                       f"--source <name>` (see ensemble_sources), and `dvc repro` to run it")


def run(name: str, params: dict, out_dir: Path | None = None, timing: Path | None = None,
        markers_dir: Path = MARKERS_DIR) -> None:
    """Build one profile of `combined:` into combined/<name>/ (or out_dir), and its wall time into
    `timing` if given (metrics/embed/<name>.json, as a base profile's)."""
    cfg = combined_config(params, name)
    check_markers(name, cfg, markers_dir)
    out_dir = Path(out_dir) if out_dir is not None else profile_dir(params, name)
    ctx = params_context(params)
    start = time.time()
    log.info("profile %s: method %s, %d clients, cutoff %s", name, method_of(cfg), len(ctx.client_ids), ctx.cutoff)
    writer = getattr(get_method(method_of(cfg)), "write_embeddings", None)
    if writer is not None:  # too big to hold whole (the ensemble at 1M x 2,048): the method writes it in blocks
        shape = store.write(out_dir, ctx.client_ids, lambda shape: profile_meta(name, cfg, ctx, shape[1]),
                            fill=lambda path: writer(ctx, cfg, path))
        write_timing(timing, name, time.time() - start)
        log.info("profile %s: %d x %d in %.1f s", name, shape[0], shape[1], time.time() - start)
        return
    write_computed(name, cfg, ctx, out_dir, timing, start)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ubp combine", description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="a key of params.yaml's combined")
    parser.add_argument("--source", default=None, help="write this source's marker instead (a marker stage)")
    args = parser.parse_args(argv)
    if args.source is None:
        run(args.profile, load_params(), timing=timing_path(args.profile))
    else:
        log.info("marker of %s for %s -> %s", args.source, args.profile, mark(args.profile, args.source, load_params()))
    return 0
