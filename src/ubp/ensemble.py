"""The ensemble profile (SPEC §9.11, seed 001 §3.3): other profiles' embeddings, each normalised on its
own, optionally reduced by PCA, weighted, balanced and concatenated.

A combined profile (params.yaml `combined.ensemble: {method: ensemble, inherits: ensemble}`, written
to `combined/ensemble/`; its DVC stage depends on every base embedding and on `models`). Settings:
the top-level `ensemble:` section, which it inherits:

    ensemble:
      sources:                 # in concatenation order; or a plain list of names (all defaults)
        features: {norm: auto}
        svd: {weight: 1.0, pca: 64, norm: l2}
      max_dim: 2048
      balance: source
      seed: 0

Sources are base profiles (`models:`), by name: a new method is one more name in `sources`.
Per source, on its own (statistics over the clients the source has):

1. `norm` — `l2`: each row to unit length (what seed 001 found best for learned embeddings);
   `quantile`: each column through its empirical CDF to a normal, then standardised (seed 001 maps
   handcrafted features through a quantile transform; we take the normal output so columns look
   like the learned ones, and standardise because a column with many ties — mostly zeros — comes
   out with a variance well below 1); `standard`: each column to mean 0, variance 1; `auto`:
   `quantile` for the tabular methods (TABULAR_METHODS: the profile's `method` in params.yaml, or
   in its meta.json), `l2` for every other method. A new tabular method is one more name there.
   `none`: the profile as published (e.g. `features`' own quantile-normal output, whose mostly-zero
   columns keep their wider spread instead of being brought to unit variance).
2. `pca` (optional): the first k principal components (exact PCA, so deterministic; signs fixed
   by scikit-learn's svd_flip), where seed 001 reduces its wide sequence embeddings.
3. Centre, then `balance: source` (default) rescales the block so its mean squared row norm is
   weight²: every source brings the same total variance whatever its width (a 300-column table
   would otherwise drown a 64-column embedding: the downstream network's first layer sums over all
   columns). `balance: dimension` makes the block's columns unit-variance on average instead (total
   ∝ width, as if every column were standardised); `balance: none` only multiplies by the weight
   (seed 001's recipe: handcrafted columns keep unit variance each, learned rows unit length).
   On the default data the three scored alike on the train-window inner split (4.43, 4.42, 4.42
   for the five current profiles; see reports/ensemble_selection.md for the noise level).
4. Clients the source lacks get the source's mean row, i.e. zeros after centring (mean imputation,
   which seed 001 found better than zeros before centring). `center: false` (per source) skips the
   centring of step 3, so that a source with `norm: none` and `balance: none` enters unchanged;
   its absent clients still get its mean row.

A source comes from `embeddings/<source>/` when that directory was made for the same events and
cutoff (meta.json `events` + `cutoff`; an older meta.json without them counts as the local
pipeline's, made from the split's input events) and, if meta.json records the `config` it was
made with, the same settings as params.yaml's now. Otherwise it is computed now with the profile's
method and settings (`ubp.embed.compute`), so the profile is right for any context: the tiny test
data, or all events for a competition entry (a source computed once is reused within the process).
A stored `SKIPPED.txt` (e.g. `oracle` on real data) or a method that cannot run here skips the
source with a warning. The output is float16; more than `max_dim` columns is an error naming each
source's width (set `pca:` on the wide ones).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from ubp import schema
from ubp.io import UbpError, load_npy
from ubp.models.base import EmbedContext, ProfileUnavailable
from ubp.models.features import quantile_normal
from ubp.params import PARAMS_FILE, load_params, model_config

log = logging.getLogger("ubp.ensemble")

NORMS = ("auto", "l2", "quantile", "standard", "none")
BALANCES = ("source", "dimension", "none")
# Methods whose output is a table of handcrafted counts/rates rather than a learned embedding.
TABULAR_METHODS = frozenset({"features", "aggregated"})
DEFAULTS = {"sources": [], "max_dim": schema.MAX_EMBEDDING_DIM, "balance": "source", "seed": 0,
            "n_quantiles": 1000, "subsample": 200_000}
SKIPPED_FILE = "SKIPPED.txt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class Source:
    name: str
    weight: float = 1.0
    pca: int | None = None
    norm: str = "auto"
    center: bool = True


@dataclass
class Loaded:
    """One source's rows for the clients it has, aligned to the clients being embedded."""

    source: Source
    method: str  # the profile's embedding method (decides what `auto` means)
    x: np.ndarray  # (present.sum(), d)
    present: np.ndarray  # bool (n_clients,)
    origin: str  # "stored" or "computed"


# --- settings ------------------------------------------------------------------------------------

def parse_sources(spec) -> list[Source]:
    """`sources` as a list of names or a mapping name -> {weight, pca, norm, center} (None: all defaults)."""
    if isinstance(spec, (list, tuple)):
        spec = {name: None for name in spec}
    if not isinstance(spec, dict) or not spec:
        raise UbpError("params.yaml: ensemble.sources must be a non-empty list of profile names "
                       "or a mapping name -> {weight, pca, norm}")
    sources = []
    for name, opts in spec.items():
        opts = {} if opts is None else opts
        if not isinstance(opts, dict):
            raise UbpError(f"params.yaml: ensemble.sources.{name} must be a mapping (weight, pca, norm, center) or empty")
        unknown = set(opts) - {"weight", "pca", "norm", "center"}
        if unknown:
            raise UbpError(f"params.yaml: ensemble.sources.{name}: unknown key(s) {', '.join(sorted(unknown))} "
                           "(have: weight, pca, norm, center)")
        weight, pca, norm = opts.get("weight", 1.0), opts.get("pca"), opts.get("norm", "auto")
        center = opts.get("center", True)
        if not isinstance(center, bool):
            raise UbpError(f"params.yaml: ensemble.sources.{name}.center must be true or false, got {center!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise UbpError(f"params.yaml: ensemble.sources.{name}.weight must be a number > 0, got {weight!r}")
        if pca is not None and (isinstance(pca, bool) or not isinstance(pca, int) or pca < 1):
            raise UbpError(f"params.yaml: ensemble.sources.{name}.pca must be a whole number >= 1 or null, got {pca!r}")
        if norm not in NORMS:
            raise UbpError(f"params.yaml: ensemble.sources.{name}.norm must be one of {', '.join(NORMS)}, got {norm!r}")
        sources.append(Source(str(name), float(weight), pca, norm, center))
    return sources


def resolve_norm(norm: str, method: str) -> str:
    if norm != "auto":
        return norm
    return "quantile" if method in TABULAR_METHODS else "l2"


# --- one source's block --------------------------------------------------------------------------

def normalise(x: np.ndarray, norm: str, seed: int = 0, n_quantiles: int = 1000,
              subsample: int = 200_000) -> np.ndarray:
    """`x` normalised by `norm` (l2 | quantile | standard | none); statistics over the rows given.

    float32 throughout: on the real data's 1M clients a float64 copy of a 300-column source is 2.4 GB."""
    x = np.asarray(x, dtype=np.float32)
    if norm == "none":
        return x
    if norm == "l2":
        lengths = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(lengths > 0, lengths, np.float32(1.0))  # an all-zero row stays zero
    if norm == "quantile":
        x = quantile_normal(x, n_quantiles, subsample, seed)
    elif norm != "standard":
        raise UbpError(f"unknown normalisation '{norm}' (have: l2, quantile, standard, none)")
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, np.float32(np.inf))  # a constant column becomes 0


def reduce(x: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    """The first `dims` principal components (fewer if x has fewer rows or columns)."""
    k = min(int(dims), x.shape[0], x.shape[1])
    solver = "covariance_eigh" if x.shape[0] > x.shape[1] else "full"  # exact either way
    return PCA(n_components=k, svd_solver=solver, random_state=seed).fit_transform(x)


def width(loaded: Loaded) -> int:
    d = loaded.x.shape[1]
    return min(d, loaded.source.pca, len(loaded.x)) if loaded.source.pca else d


def block(loaded: Loaded, n_clients: int, balance: str = "source", seed: int = 0, n_quantiles: int = 1000,
          subsample: int = 200_000) -> np.ndarray:
    """The source's columns of the ensemble, (n_clients, width) float32, absent clients at the mean."""
    src = loaded.source
    x = normalise(loaded.x, resolve_norm(src.norm, loaded.method), seed, n_quantiles, subsample)
    if src.pca:
        x = reduce(x, src.pca, seed)
    if src.center:
        x = x - x.mean(axis=0)
    if balance in ("source", "dimension"):
        target = 1.0 if balance == "source" else float(x.shape[1])  # total, or per column on average
        mean_square = float((x.astype(np.float64) ** 2).sum(axis=1).mean())
        x = x * np.float32(src.weight * np.sqrt(target / mean_square)) if mean_square > 0 else x
    elif balance == "none":
        x = x * np.float32(src.weight)
    else:
        raise UbpError(f"params.yaml: ensemble.balance must be one of {', '.join(BALANCES)}, got {balance!r}")
    out = np.empty((n_clients, x.shape[1]), dtype=np.float32)
    out[:] = 0.0 if src.center else x.mean(axis=0)  # absent clients: the source's mean row
    out[loaded.present] = x
    return out


def check_width(loaded: list[Loaded], max_dim: int) -> None:
    widths = {item.source.name: width(item) for item in loaded}
    total = sum(widths.values())
    if total > max_dim:
        parts = ", ".join(f"{name} {w}" for name, w in widths.items())
        raise UbpError(f"ensemble: {total} columns ({parts}) exceed max_dim {max_dim}; "
                       "reduce the widest sources with `pca:` in ensemble.sources, or drop one")


def combine(loaded: list[Loaded], n_clients: int, cfg: dict) -> np.ndarray:
    """The sources' blocks side by side, in the order given; float16."""
    s = {**DEFAULTS, **cfg}
    if not loaded:
        raise UbpError("ensemble: no source left to combine (all were skipped)")
    check_width(loaded, min(int(s["max_dim"]), schema.MAX_EMBEDDING_DIM))
    blocks = [block(item, n_clients, s["balance"], int(s["seed"]), int(s["n_quantiles"]), int(s["subsample"]))
              for item in loaded]
    return np.concatenate(blocks, axis=1).astype(np.float16)


# --- where a source's rows come from -------------------------------------------------------------

def align(stored_ids: np.ndarray, x: np.ndarray, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `x` (ids `stored_ids`) for `client_ids` in order: (rows of the present ones, present mask)."""
    stored_ids = np.asarray(stored_ids, dtype=np.int64)
    order = np.argsort(stored_ids, kind="stable")
    sorted_ids = stored_ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, client_ids), 0, max(len(sorted_ids) - 1, 0))
    present = (sorted_ids[pos] == client_ids) if len(sorted_ids) else np.zeros(len(client_ids), bool)
    return np.asarray(x)[order[pos[present]]], present


def made_for(profile_dir: Path, ctx: EmbedContext) -> bool:
    """Was `profile_dir` made from ctx's events as of ctx's cutoff?"""
    meta_path = profile_dir / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if "events" in meta or "cutoff" in meta:
        return (meta.get("cutoff") == ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)
                and Path(str(meta.get("events"))).resolve() == Path(ctx.events_dir).resolve())
    # Written before embed.py recorded them: `python -m ubp embed` embeds the split's input events.
    return Path(ctx.events_dir).resolve() == (schema.SPLIT_DIR / "input").resolve()


def load_source(source: Source, ctx: EmbedContext, params: dict, embeddings_dir: Path) -> Loaded | None:
    """The source's rows for ctx.client_ids; None (with a warning) if it is skipped here."""
    name, profile_dir = source.name, Path(embeddings_dir) / source.name
    models = params.get("models") or {}
    cfg = model_config(params, name) if name in models else None
    if name in (params.get("combined") or {}) or (cfg is not None and cfg.get("method", name) == "ensemble"):
        raise UbpError(f"ensemble: source '{name}' is a combined profile; list base profiles (models) only")
    if profile_dir.is_dir() and made_for(profile_dir, ctx):
        if (profile_dir / SKIPPED_FILE).is_file():
            log.warning("ensemble: source %s skipped (%s)", name, (profile_dir / SKIPPED_FILE).read_text().strip())
            return None
        meta_path = profile_dir / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        stale = cfg is not None and "config" in meta and meta["config"] != json.loads(json.dumps(cfg, default=str))
        if not stale:
            x, present = align(load_npy(profile_dir / "client_ids.npy"), load_npy(profile_dir / "embeddings.npy"),
                               ctx.client_ids)
            method = cfg.get("method", name) if cfg is not None else str(meta.get("method", name))
            if not present.any():
                log.warning("ensemble: source %s has none of the clients to embed: skipped", name)
                return None
            return Loaded(source, method, x, present, "stored")
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
    return Loaded(source, str(cfg.get("method", name)), x, np.ones(len(ctx.client_ids), bool), "computed")


# Sources computed in this process, by (profile, settings, context): computing the same profile for
# the same clients, events and cutoff again would give the same bytes (every method is deterministic),
# so a second ensemble in one process (e.g. the contract test's determinism run) reuses them.
_COMPUTED: dict[tuple, np.ndarray] = {}


def computed_source(name: str, cfg: dict, ctx: EmbedContext) -> np.ndarray:
    from ubp.embed import compute  # here: ubp.embed imports the models package

    key = (name, json.dumps(cfg, sort_keys=True, default=str), str(ctx.events_dir), str(ctx.properties_path),
           ctx.cutoff.isoformat(), str(ctx.synthetic_dir), str(ctx.features_path), str(ctx.sequences_dir),
           json.dumps(ctx.sequence_settings, sort_keys=True, default=str),
           hashlib.sha256(np.ascontiguousarray(ctx.client_ids, dtype=np.int64).tobytes()).hexdigest())
    if key not in _COMPUTED:
        log.info("ensemble: computing source %s (method %s) for %d clients", name, cfg.get("method", name),
                 len(ctx.client_ids))
        own = dataclasses.replace(ctx, seed=int(cfg.get("seed", 0)), device=str(cfg.get("device", ctx.device)),
                                  info={})
        _COMPUTED[key] = compute(name, cfg, own)
    return _COMPUTED[key]


def build(ctx: EmbedContext, cfg: dict) -> np.ndarray:
    """The ensemble of cfg['sources'] for ctx.client_ids; facts per source go to ctx.info."""
    s = {**DEFAULTS, **cfg}
    sources = parse_sources(s["sources"])
    params = load_params(s.get("params_file") or PARAMS_FILE)
    embeddings_dir = Path(s.get("embeddings_dir") or schema.EMBEDDINGS_DIR)
    loaded, skipped = [], []
    for source in sources:
        item = load_source(source, ctx, params, embeddings_dir)
        (skipped.append(source.name) if item is None else loaded.append(item))
    matrix = combine(loaded, len(ctx.client_ids), s)
    ctx.info["sources"] = {
        item.source.name: {"method": item.method, "norm": resolve_norm(item.source.norm, item.method),
                           "weight": item.source.weight, "pca": item.source.pca, "dim_in": int(item.x.shape[1]),
                           "dim": width(item), "from": item.origin,
                           "imputed_clients": int((~item.present).sum())}
        for item in loaded
    }
    if skipped:
        ctx.info["skipped_sources"] = skipped
    return matrix
