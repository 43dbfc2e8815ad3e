"""How one source becomes its columns of a combined profile (SPEC §9.11, seed 001 §3.3).

Per source, on its own (statistics over the clients the source has):

1. `norm` — `l2`: each row to unit length (what seed 001 found best for learned embeddings);
   `quantile`: each column through its empirical CDF to a normal, then standardised (a column with
   many ties comes out with a variance well below 1); `standard`: each column to mean 0, variance 1;
   `auto`: `quantile` for the tabular methods (`TABULAR = True`), `l2` for the others; `none`: the
   profile as published.
2. `pca` (optional): the first k principal components (exact PCA: deterministic, signs by svd_flip).
3. Centre (unless `center: false`), then `balance: source` rescales the block to mean squared row
   norm weight² (every source the same total variance whatever its width); `dimension`: its columns
   unit-variance on average; `none`: only the weight (seed 001's recipe).
4. Clients the source lacks get the source's mean row (zeros after centring).

Never the whole matrix at once: a source's rows are gathered, normalised and written a chunk of
rows at a time (memory-mapped in and out), giving the bytes the whole-matrix code gives.
"""
from __future__ import annotations

import mmap
from typing import TYPE_CHECKING

import numpy as np
from sklearn.decomposition import PCA

from ubp import schema
from ubp.combine.sources import Loaded
from ubp.io import UbpError
from ubp.models import available_methods, traits
from ubp.models.features import quantile_normal

if TYPE_CHECKING:
    from ubp.combine.ensemble import Config

BALANCES = ("source", "dimension", "none")
# Rows are gathered, l2-normalised and written this many float32 bytes at a time (64 MB) (and
# quantile_normal works a block of columns at a time): the peak stays near one source's float32
# block whatever the number of clients.
CHUNK_BYTES = 64 << 20


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


def resolve_norm(norm: str, method: str) -> str:
    if norm != "auto":
        return norm
    return "quantile" if method in available_methods() and traits(method).tabular else "l2"


def normalise(x: np.ndarray, norm: str, cfg: Config) -> np.ndarray:
    """`x` normalised by `norm` (l2 | quantile | standard | none) as a new float32 array; statistics
    over the rows given (the quantile map's settings: cfg's). float32 throughout: a float64 copy of a
    300-column source is 2.4 GB at 1M."""
    return normalise_inplace(np.array(x, dtype=np.float32), norm, cfg)


def normalise_inplace(x: np.ndarray, norm: str, cfg: Config) -> np.ndarray:
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
        quantile_normal(x, cfg.n_quantiles, cfg.subsample, cfg.seed, out=x)  # a block of columns at a time
    elif norm != "standard":
        raise UbpError(f"unknown normalisation '{norm}' (have: l2, quantile, standard, none)")
    std = x.std(axis=0)
    x -= x.mean(axis=0)
    x /= np.where(std > 0, std, np.float32(np.inf))  # a constant column becomes 0
    return x


def reduce(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
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


def source_columns(loaded: Loaded, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """The source's columns of the ensemble for its present clients, (n_present, width), and the
    row its absent clients get (the source's mean row); one float32 block, changed in place."""
    src, balance = loaded.source, cfg.balance
    x = normalise_inplace(present_rows(loaded), resolve_norm(src.norm, loaded.method), cfg)
    if src.pca:
        x = reduce(x, src.pca, cfg.seed)
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


def block(loaded: Loaded, n_clients: int, cfg: Config) -> np.ndarray:
    """The source's columns of the ensemble, (n_clients, width) float32, absent clients at the mean."""
    x, fill = source_columns(loaded, cfg)
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
                       "reduce the widest sources with `pca:` in per_source, or drop one")
    return total


def fill(out: np.ndarray, loaded: list[Loaded], cfg: Config) -> None:
    """The sources' blocks side by side into out (n_clients, total width), one source at a time."""
    start = 0
    for item in loaded:
        x, absent_row = source_columns(item, cfg)
        put_columns(out, start, x, absent_row, item.present, item.source.name)
        start += x.shape[1]
        del x  # before the next source's block is made


def combine(loaded: list[Loaded], n_clients: int, cfg: Config) -> np.ndarray:
    """The sources' blocks side by side, in the order given; float16, in memory."""
    if not loaded:
        raise UbpError("ensemble: no source left to combine (all were skipped)")
    out = np.empty((n_clients, check_width(loaded, min(cfg.max_dim, schema.MAX_EMBEDDING_DIM))), np.float16)
    fill(out, loaded, cfg)
    return out
