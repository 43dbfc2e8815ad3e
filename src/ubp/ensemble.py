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
   `quantile` for the tabular methods (the module of the profile's `method` in params.yaml, or in
   its meta.json, says `TABULAR = True`), `l2` for every other method.
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
source's width (set `pca:` on the wide ones). At the real data's size (1M clients x up to 2,048
columns) the stage never holds the whole matrix: stored sources are memory-mapped, and `write`
normalises one source at a time and writes its columns into a memory-mapped .npy, a chunk of rows
at a time, giving the same bytes as the in-memory `build`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from ubp import schema
from ubp.config import as_dict
from ubp.io import UbpError, load_npy
from ubp.models import available_methods, method_of, traits
from ubp.models.base import EmbedContext, ProfileUnavailable
from ubp.models.features import quantile_normal
from ubp.params import PARAMS_FILE, load_params, model_config, profile_method

log = logging.getLogger("ubp.ensemble")

NORMS = ("auto", "l2", "quantile", "standard", "none")
BALANCES = ("source", "dimension", "none")
DEFAULTS = {"sources": [], "max_dim": schema.MAX_EMBEDDING_DIM, "balance": "source", "seed": 0,
            "n_quantiles": 1000, "subsample": 200_000}
SKIPPED_FILE = "SKIPPED.txt"
META_FILE = "meta.json"
# Rows are gathered, l2-normalised and written this many float32 bytes at a time (64 MB) (and
# quantile_normal works a block of columns at a time): the peak stays near one source's float32
# block whatever the number of clients.
CHUNK_BYTES = 64 << 20


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
    x: np.ndarray  # (present.sum(), d); or, with `rows`, the whole stored matrix (memory-mapped)
    present: np.ndarray  # bool (n_clients,)
    origin: str  # "stored" or "computed"
    rows: np.ndarray | None = None  # x's row of each present client, in client order (None: x holds them)

    @property
    def n_present(self) -> int:
        return int(self.present.sum())


def chunks(n_rows: int, n_cols: int) -> list[tuple[int, int]]:
    """Row ranges [a, b) of about CHUNK_BYTES of float32 each."""
    step = max(1, CHUNK_BYTES // (4 * max(int(n_cols), 1)))
    return [(a, min(a + step, n_rows)) for a in range(0, n_rows, step)]


def release(array: np.ndarray) -> None:
    """Drop a memory-mapped array's resident pages from this process; the file (or page cache) keeps
    the data, so reading a 1M-row source or writing the output does not grow the process's memory."""
    mapping = getattr(array, "_mmap", None)  # np.memmap's mmap object
    if mapping is not None:
        mapping.madvise(mmap.MADV_DONTNEED)


def present_rows(loaded: Loaded) -> np.ndarray:
    """The present clients' rows as a new float32 array (normalised in place afterwards)."""
    if loaded.rows is None:
        return np.array(loaded.x, dtype=np.float32)  # a copy: the caller's array is never changed
    out = np.empty((len(loaded.rows), loaded.x.shape[1]), dtype=np.float32)
    for a, b in chunks(*out.shape):
        rows = loaded.rows[a:b]
        contiguous = rows[-1] - rows[0] == len(rows) - 1 and bool((np.diff(rows) == 1).all())
        out[a:b] = loaded.x[rows[0]:rows[-1] + 1] if contiguous else loaded.x[rows]
        release(loaded.x)
    return out


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
    return "quantile" if method in available_methods() and traits(method).tabular else "l2"


# --- one source's block --------------------------------------------------------------------------

def normalise(x: np.ndarray, norm: str, seed: int = 0, n_quantiles: int = 1000,
              subsample: int = 200_000) -> np.ndarray:
    """`x` normalised by `norm` (l2 | quantile | standard | none) as a new float32 array; statistics
    over the rows given. float32 throughout: a float64 copy of a 300-column source is 2.4 GB at 1M."""
    return normalise_inplace(np.array(x, dtype=np.float32), norm, seed, n_quantiles, subsample)


def normalise_inplace(x: np.ndarray, norm: str, seed: int = 0, n_quantiles: int = 1000,
                      subsample: int = 200_000) -> np.ndarray:
    """`normalise` overwriting the float32 array x; row lengths and quantile columns are computed a
    chunk at a time (each row's length and each column's transform are its own, so same bytes)."""
    if norm == "none":
        return x
    if norm == "l2":
        for a, b in chunks(*x.shape):
            lengths = np.linalg.norm(x[a:b], axis=1, keepdims=True)
            x[a:b] /= np.where(lengths > 0, lengths, np.float32(1.0))  # an all-zero row stays zero
        return x
    if norm == "quantile":
        quantile_normal(x, n_quantiles, subsample, seed, out=x)  # a block of columns at a time
    elif norm != "standard":
        raise UbpError(f"unknown normalisation '{norm}' (have: l2, quantile, standard, none)")
    std = x.std(axis=0)
    x -= x.mean(axis=0)
    x /= np.where(std > 0, std, np.float32(np.inf))  # a constant column becomes 0
    return x


def reduce(x: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    """The first `dims` principal components (fewer if x has fewer rows or columns)."""
    k = min(int(dims), x.shape[0], x.shape[1])
    solver = "covariance_eigh" if x.shape[0] > x.shape[1] else "full"  # exact either way
    return PCA(n_components=k, svd_solver=solver, random_state=seed).fit_transform(x)


def width(loaded: Loaded) -> int:
    d = loaded.x.shape[1]
    return min(d, loaded.source.pca, loaded.n_present) if loaded.source.pca else d


def mean_square_norm(x: np.ndarray) -> float:
    """The mean squared row norm in float64, a chunk of rows at a time (no float64 copy of x)."""
    sums = np.empty(len(x), dtype=np.float64)
    for a, b in chunks(*x.shape):
        sums[a:b] = (x[a:b].astype(np.float64) ** 2).sum(axis=1)
    return float(sums.mean())


def source_columns(loaded: Loaded, balance: str = "source", seed: int = 0, n_quantiles: int = 1000,
                   subsample: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """The source's columns of the ensemble for its present clients, (n_present, width), and the
    row its absent clients get (the source's mean row); one float32 block, changed in place."""
    src = loaded.source
    x = normalise_inplace(present_rows(loaded), resolve_norm(src.norm, loaded.method), seed, n_quantiles, subsample)
    if src.pca:
        x = reduce(x, src.pca, seed)
    if src.center:
        x -= x.mean(axis=0)
    if balance in ("source", "dimension"):
        target = 1.0 if balance == "source" else float(x.shape[1])  # total, or per column on average
        mean_square = mean_square_norm(x)
        if mean_square > 0:
            x *= np.float32(src.weight * np.sqrt(target / mean_square))
    elif balance == "none":
        x *= np.float32(src.weight)
    else:
        raise UbpError(f"params.yaml: ensemble.balance must be one of {', '.join(BALANCES)}, got {balance!r}")
    return x, (np.zeros(x.shape[1], np.float32) if src.center else x.mean(axis=0))


def block(loaded: Loaded, n_clients: int, balance: str = "source", seed: int = 0, n_quantiles: int = 1000,
          subsample: int = 200_000) -> np.ndarray:
    """The source's columns of the ensemble, (n_clients, width) float32, absent clients at the mean."""
    x, fill = source_columns(loaded, balance, seed, n_quantiles, subsample)
    out = np.empty((n_clients, x.shape[1]), dtype=np.float32)
    out[:] = fill
    out[loaded.present] = x
    return out


def put_columns(out: np.ndarray, start: int, x: np.ndarray, fill: np.ndarray, present: np.ndarray,
                name: str) -> None:
    """out[:, start:start + width] = the source's float32 block as `block` lays it out, cast to
    out's float16 a chunk of rows at a time (a memory-mapped out's pages released after each)."""
    w = x.shape[1]
    before = np.concatenate([[0], np.cumsum(present)])  # present clients before each row
    for a, b in chunks(len(present), w):
        part = np.empty((b - a, w), dtype=np.float32)
        part[:] = fill
        part[present[a:b]] = x[before[a]:before[b]]
        with np.errstate(over="ignore"):  # checked on the next line
            half = part.astype(out.dtype)
        if not np.isfinite(half).all():
            raise UbpError(f"ensemble: source {name} has values beyond float16's range after its normalisation "
                           "and weight; lower its weight or normalise it (norm: l2, standard or quantile)")
        out[a:b, start:start + w] = half
        release(out)


def check_width(loaded: list[Loaded], max_dim: int) -> int:
    widths = {item.source.name: width(item) for item in loaded}
    total = sum(widths.values())
    if total > max_dim:
        parts = ", ".join(f"{name} {w}" for name, w in widths.items())
        raise UbpError(f"ensemble: {total} columns ({parts}) exceed max_dim {max_dim}; "
                       "reduce the widest sources with `pca:` in ensemble.sources, or drop one")
    return total


def fill(out: np.ndarray, loaded: list[Loaded], cfg: dict) -> None:
    """The sources' blocks side by side into out (n_clients, total width), one source at a time."""
    s = {**DEFAULTS, **cfg}
    start = 0
    for item in loaded:
        x, absent_row = source_columns(item, s["balance"], int(s["seed"]), int(s["n_quantiles"]), int(s["subsample"]))
        put_columns(out, start, x, absent_row, item.present, item.source.name)
        start += x.shape[1]
        del x  # before the next source's block is made


def combine(loaded: list[Loaded], n_clients: int, cfg: dict) -> np.ndarray:
    """The sources' blocks side by side, in the order given; float16, in memory."""
    s = {**DEFAULTS, **cfg}
    if not loaded:
        raise UbpError("ensemble: no source left to combine (all were skipped)")
    out = np.empty((n_clients, check_width(loaded, min(int(s["max_dim"]), schema.MAX_EMBEDDING_DIM))), np.float16)
    fill(out, loaded, s)
    return out


# --- where a source's rows come from -------------------------------------------------------------

def align_rows(stored_ids: np.ndarray, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For `client_ids` in order: (the stored row of each present one, present mask)."""
    stored_ids = np.asarray(stored_ids, dtype=np.int64)
    order = np.argsort(stored_ids, kind="stable")
    sorted_ids = stored_ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, client_ids), 0, max(len(sorted_ids) - 1, 0))
    present = (sorted_ids[pos] == client_ids) if len(sorted_ids) else np.zeros(len(client_ids), bool)
    return order[pos[present]], present


def open_npy(path: Path) -> np.ndarray:
    """A stored .npy mapped read-only: its rows are read when used, never copied whole."""
    if not Path(path).exists():
        raise UbpError(f"{path}: file not found")
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a corrupt file
        raise UbpError(f"{path}: not a readable .npy array ({exc})") from None
    if x.ndim != 2:
        raise UbpError(f"{path}: expected a (clients, dimensions) matrix, got shape {x.shape}")
    return x


def stored(profile_dir: Path, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stored profile's mapped matrix, the row of each present client and the present mask."""
    ids, x = load_npy(profile_dir / "client_ids.npy"), open_npy(profile_dir / "embeddings.npy")
    if len(ids) != len(x):
        raise UbpError(f"{profile_dir}: embeddings.npy has {len(x)} rows, client_ids.npy {len(ids)}")
    rows, present = align_rows(ids, client_ids)
    return x, rows, present


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
    method = profile_method(params, name) if cfg is not None else None
    if name in (params.get("combined") or {}) or (method is not None and traits(method).combined):
        raise UbpError(f"ensemble: source '{name}' is a combined profile; list base profiles (models) only")
    if profile_dir.is_dir() and made_for(profile_dir, ctx):
        if (profile_dir / SKIPPED_FILE).is_file():
            log.warning("ensemble: source %s skipped (%s)", name, (profile_dir / SKIPPED_FILE).read_text().strip())
            return None
        meta_path = profile_dir / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
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
           hashlib.sha256(np.ascontiguousarray(ctx.client_ids, dtype=np.int64).tobytes()).hexdigest())
    if key not in _COMPUTED:
        log.info("ensemble: computing source %s (method %s) for %d clients", name, method_of(cfg),
                 len(ctx.client_ids))
        _COMPUTED[key] = compute(name, cfg, dataclasses.replace(ctx, info={}))
    return _COMPUTED[key]


def load_all(ctx: EmbedContext, cfg: dict) -> tuple[list[Loaded], dict]:
    """Every source of cfg['sources'] for ctx.client_ids (stored ones mapped, not read); facts to ctx.info."""
    s = {**DEFAULTS, **cfg}
    params = load_params(s.get("params_file") or PARAMS_FILE)
    embeddings_dir = Path(s.get("embeddings_dir") or schema.EMBEDDINGS_DIR)
    loaded, skipped = [], []
    for source in parse_sources(s["sources"]):
        item = load_source(source, ctx, params, embeddings_dir)
        (skipped.append(source.name) if item is None else loaded.append(item))
    if not loaded:
        raise UbpError("ensemble: no source left to combine (all were skipped)")
    ctx.info["sources"] = {
        item.source.name: {"method": item.method, "norm": resolve_norm(item.source.norm, item.method),
                           "weight": item.source.weight, "pca": item.source.pca, "dim_in": int(item.x.shape[1]),
                           "dim": width(item), "from": item.origin,
                           "imputed_clients": int((~item.present).sum())}
        for item in loaded
    }
    if skipped:
        ctx.info["skipped_sources"] = skipped
    return loaded, s


def build(ctx: EmbedContext, cfg: dict) -> np.ndarray:
    """The ensemble of cfg['sources'] for ctx.client_ids, in memory; facts per source go to ctx.info."""
    loaded, s = load_all(ctx, cfg)
    return combine(loaded, len(ctx.client_ids), s)


def write(ctx: EmbedContext, cfg: dict, path: Path) -> tuple[int, int]:
    """`build`'s matrix written to the .npy `path` one source at a time (same bytes); its shape."""
    loaded, s = load_all(ctx, cfg)
    total = check_width(loaded, min(int(s["max_dim"]), schema.MAX_EMBEDDING_DIM))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(ctx.client_ids), total))
    fill(out, loaded, s)
    out.flush()
    del out
    return len(ctx.client_ids), total
