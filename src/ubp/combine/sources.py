"""A combined profile's sources: their settings, and where their rows come from.

A source is a base profile (`models:`) named in a combined profile's `sources:` (a list: the
concatenation order); `per_source.<name>` says how it is normalised (`SourceSettings`). Its rows
come from `embeddings/<source>/` when that directory was made for the same events and cutoff
(meta.json `events` + `cutoff`; an older meta.json without them counts as the local pipeline's,
made from the split's input events) and, if meta.json records the `config` it was made with, the
same settings as params.yaml's now. Otherwise it is computed now with the profile's method and
settings (`ubp.embed.compute`), so a combined profile is right for any context: the tiny test data,
or all events for a competition entry (a source computed once is reused within the process). A
stored `SKIPPED.txt` (e.g. `oracle` on real data) or a method that cannot run here skips the source
with a warning. Stored sources are memory-mapped: only the rows used are read.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ubp import profile_store as store
from ubp import schema
from ubp.config import as_dict
from ubp.io import UbpError
from ubp.models import method_of, traits
from ubp.models.base import EmbedContext, ProfileUnavailable
from ubp.params import model_config, profile_method

log = logging.getLogger("ubp.combine")


@dataclass(frozen=True)
class SourceSettings:
    """One source's normalisation (`per_source.<name>`; see `ubp.combine.blocks` for what each does)."""
    weight: float = 1.0
    pca: int | None = None  # keep the first `pca` principal components
    norm: Literal["auto", "l2", "quantile", "standard", "none"] = "auto"
    center: bool = True

    def check(self, name: str) -> None:
        if not self.weight > 0:
            raise UbpError(f"params.yaml: per_source.{name}.weight must be a number > 0, got {self.weight!r}")
        if self.pca is not None and self.pca < 1:
            raise UbpError(f"params.yaml: per_source.{name}.pca must be a whole number >= 1 or null, got {self.pca!r}")


@dataclass(frozen=True, kw_only=True)
class Source(SourceSettings):
    name: str

    def __post_init__(self):
        self.check(self.name)


def check_sources(sources: tuple[str, ...], per_source: Mapping[str, SourceSettings]) -> None:
    """A Config's `sources` and `per_source`, checked when it is built (before any work)."""
    if not sources:
        raise UbpError("params.yaml: sources must name at least one profile")
    repeated = sorted({name for name in sources if sources.count(name) > 1})
    if repeated:
        raise UbpError(f"params.yaml: sources lists {', '.join(repeated)} more than once")
    for name, settings in per_source.items():
        settings.check(name)


def listed(cfg) -> list[Source]:
    """cfg.sources in order, each with its cfg.per_source settings (defaults if it has none)."""
    return [Source(name=name, **dataclasses.asdict(cfg.per_source.get(name, SourceSettings())))
            for name in cfg.sources]


def check_names(cfg, params: dict) -> None:
    """Every name in cfg.per_source is a source or a base profile: a typo is not silently ignored."""
    known = [*cfg.sources, *(params.get("models") or {})]
    for name in cfg.per_source:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UbpError(f"params.yaml: per_source.{name} is neither a source nor a profile of models{hint}")


@dataclass
class Loaded:
    """One source's rows for the clients it has, aligned to the clients being embedded."""

    source: Source
    method: str  # the profile's embedding method (decides what `auto` means)
    x: np.ndarray  # (present.sum(), d); or, with `rows`, the whole stored matrix (memory-mapped)
    present: np.ndarray  # bool (n_clients,)
    origin: str  # "stored" or "computed"
    rows: np.ndarray | None = None  # x's row of each present client, in client order (None: x holds them)

    @property
    def n_present(self) -> int:
        return int(self.present.sum())


def align_rows(stored_ids: np.ndarray, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For `client_ids` in order: (the stored row of each present one, present mask)."""
    stored_ids = np.asarray(stored_ids, dtype=np.int64)
    order = np.argsort(stored_ids, kind="stable")
    sorted_ids = stored_ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, client_ids), 0, max(len(sorted_ids) - 1, 0))
    present = (sorted_ids[pos] == client_ids) if len(sorted_ids) else np.zeros(len(client_ids), bool)
    return order[pos[present]], present


def stored(profile_dir: Path, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stored profile's matrix (memory-mapped, checked by ubp.profile_store), the row of each
    present client and the present mask."""
    profile = store.open_profile(profile_dir)
    rows, present = align_rows(profile.client_ids, client_ids)
    return profile.embeddings, rows, present


def made_for(profile_dir: Path, ctx: EmbedContext) -> bool:
    """Was `profile_dir` made from ctx's events as of ctx's cutoff?"""
    meta = store.read_meta(profile_dir)
    if "events" in meta or "cutoff" in meta:
        return (meta.get("cutoff") == ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)
                and Path(str(meta.get("events"))).resolve() == Path(ctx.events_dir).resolve())
    # Written before embed.py recorded them: `python -m ubp embed` embeds the split's input events.
    return Path(ctx.events_dir).resolve() == (schema.SPLIT_DIR / "input").resolve()


def load_source(source: Source, ctx: EmbedContext, params: dict, embeddings_dir: Path) -> Loaded | None:
    """The source's rows for ctx.client_ids; None (with a warning) if it is skipped here."""
    name, profile_dir = source.name, Path(embeddings_dir) / source.name
    models = params.get("models") or {}
    method = profile_method(params, name) if name in models else None
    if name in (params.get("combined") or {}) or (method is not None and traits(method).combined):
        raise UbpError(f"ensemble: source '{name}' is a combined profile; list base profiles (models) only")
    cfg = model_config(params, name) if name in models else None
    if profile_dir.is_dir() and made_for(profile_dir, ctx):
        if store.skipped(profile_dir) is not None:
            log.warning("ensemble: source %s skipped (%s)", name, store.skipped(profile_dir))
            return None
        meta = store.read_meta(profile_dir)
        stale = cfg is not None and "config" in meta and meta["config"] != json.loads(json.dumps(as_dict(cfg)))
        if not stale:
            x, rows, present = stored(profile_dir, ctx.client_ids)
            method = method or str(meta.get("method", name))
            if not present.any():
                log.warning("ensemble: source %s has none of the clients to embed: skipped", name)
                return None
            return Loaded(source, method, x, present, "stored", rows)
        log.warning("ensemble: %s was made with other settings than params.yaml's: computing it again", profile_dir)
    if cfg is None:
        where = f"{profile_dir} was made for other events or another cutoff" if profile_dir.is_dir() \
            else f"there is no {profile_dir}"
        raise UbpError(f"ensemble: source '{name}' is not a profile in params.yaml's models and {where} "
                       f"(have: {', '.join(models)})")
    try:
        x = computed_source(name, cfg, ctx)
    except ProfileUnavailable as exc:
        log.warning("ensemble: source %s skipped (%s)", name, exc)
        return None
    return Loaded(source, method, x, np.ones(len(ctx.client_ids), bool), "computed")


# Sources computed in this process, by (profile, settings, context): computing the same profile for
# the same clients, events and cutoff again would give the same bytes (every method is deterministic),
# so a second ensemble in one process (e.g. the contract test's determinism run) reuses them.
_COMPUTED: dict[tuple, np.ndarray] = {}


def computed_source(name: str, cfg, ctx: EmbedContext) -> np.ndarray:
    from ubp.embed import compute  # here: ubp.embed imports the models package

    key = (name, json.dumps(as_dict(cfg), sort_keys=True, default=str), str(ctx.events_dir),
           str(ctx.properties_path),
           ctx.cutoff.isoformat(), str(ctx.synthetic_dir), str(ctx.features_path), str(ctx.sequences_dir),
           json.dumps(ctx.sequence_settings, sort_keys=True, default=str),
           json.dumps(ctx.feature_settings, sort_keys=True, default=str),
           hashlib.sha256(np.ascontiguousarray(ctx.client_ids, dtype=np.int64).tobytes()).hexdigest())
    if key not in _COMPUTED:
        log.info("ensemble: computing source %s (method %s) for %d clients", name, method_of(cfg),
                 len(ctx.client_ids))
        _COMPUTED[key] = compute(name, cfg, dataclasses.replace(ctx, info={}))
    return _COMPUTED[key]
