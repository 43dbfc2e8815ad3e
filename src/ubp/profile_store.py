"""A profile's directory, written, read and checked in one place (SPEC §7's submission format).

    client_ids.npy   int64, one id per row            meta.json           what it was made from
    embeddings.npy   float16 (clients, dimensions)    training_curve.csv  per-epoch losses (neural)
    SKIPPED.txt      instead of the three above: why the method could not run on this data

The embed and combine stages write it, evaluate and the ensemble read it (a memory map: at 1M x 2,048
nothing is loaded whole), a competition entry is the same directory checked strictly (`entry=True`:
float16, finite, exactly the relevant clients). Everything in it depends only on the inputs and the
params: timings go to the stage's log and `metrics/embed/<profile>.json`, never here, so a re-run on
unchanged inputs writes the same bytes (and DVC sees the same hash).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ubp import schema
from ubp.io import UbpError, atomic_dir, load_npy, npy_problem

CLIENT_IDS = "client_ids.npy"
EMBEDDINGS = "embeddings.npy"
META = "meta.json"
SKIPPED = "SKIPPED.txt"
CURVE = "training_curve.csv"
BLOCK_BYTES = 64 << 20  # finiteness is checked a block of rows at a time


@dataclass(frozen=True)
class Stored:
    """A checked profile directory: ids in memory, the embedding as a read-only memory map."""
    directory: Path
    client_ids: np.ndarray
    embeddings: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.embeddings.shape


def write(out_dir: Path, client_ids: np.ndarray, meta: dict | Callable[[tuple[int, int]], dict],
          embeddings: np.ndarray | None = None, *, fill: Callable[[Path], tuple[int, int]] | None = None,
          curve: list[dict] | None = None, check: Callable[[Path], None] | None = None) -> tuple[int, int]:
    """Write the directory atomically and return the embedding's shape: `embeddings` whole, or
    `fill(path)` writing embeddings.npy in blocks and returning its shape (too big to hold: the
    ensemble at 1M x 2,048). `meta` may be a function of that shape. `check(tmp)` runs on the
    finished files before they replace `out_dir`, so a refused profile leaves the old one in place."""
    if (embeddings is None) == (fill is None):
        raise ValueError("write: give exactly one of embeddings or fill")
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / CLIENT_IDS, np.asarray(client_ids, dtype=np.int64))
        if fill is not None:
            shape = tuple(fill(tmp / EMBEDDINGS))
        else:
            np.save(tmp / EMBEDDINGS, embeddings)
            shape = embeddings.shape
        (tmp / META).write_text(json.dumps(meta(shape) if callable(meta) else meta, indent=2) + "\n")
        if curve:
            columns = list(curve[0])
            rows = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in curve]
            (tmp / CURVE).write_text("\n".join(rows) + "\n")
        if check is not None:
            try:
                check(tmp)
            except UbpError as exc:  # name the directory the user asked for, not the temporary one
                raise UbpError(str(exc).replace(str(tmp), str(out_dir))) from None
    return shape


def write_skipped(out_dir: Path, reason: str) -> None:
    with atomic_dir(out_dir) as tmp:
        (tmp / SKIPPED).write_text(reason + "\n")


def skipped(directory: Path) -> str | None:
    """Why the profile was skipped, or None if it was not."""
    path = Path(directory) / SKIPPED
    return (path.read_text().strip() or "skipped") if path.is_file() else None


def read_meta(directory: Path) -> dict:
    """meta.json, or {} if there is none (a profile made elsewhere and put in place by hand)."""
    path = Path(directory) / META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UbpError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise UbpError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def open_matrix(path: Path) -> np.ndarray:
    """A stored .npy matrix mapped read-only: rows are read when used, never copied whole."""
    path = Path(path)
    if not path.exists():
        raise UbpError(f"{path}: file not found")
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a corrupt file
        raise UbpError(f"{path}: {npy_problem(path, exc)}") from None
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise UbpError(f"{path}: expected a 2-D float array (clients x dimensions), got {x.dtype} with shape {x.shape}")
    return x


def open_profile(directory: Path, relevant: np.ndarray | None = None, entry: bool = False) -> Stored:
    """The directory's ids and embedding, checked: 1-D int64 unique ids, one float row per id, at most
    SPEC §7's dimensions; with `relevant`, the ids are exactly those clients. `entry=True` adds what a
    competition entry needs: float16 and no NaN or inf (read a block at a time). Otherwise NaN and inf
    are left to the reader (evaluate counts them while it converts the values)."""
    directory = Path(directory)
    ids_path, emb_path = directory / CLIENT_IDS, directory / EMBEDDINGS
    ids, emb = load_npy(ids_path), open_matrix(emb_path)
    if ids.ndim != 1 or ids.dtype != np.int64:
        raise UbpError(f"{ids_path}: expected a 1-D int64 array, got {ids.dtype} with shape {ids.shape}")
    if len(emb) != len(ids):
        raise UbpError(f"{emb_path}: {len(emb)} rows for {len(ids)} client ids in {ids_path.name}")
    if emb.shape[1] > schema.MAX_EMBEDDING_DIM:
        raise UbpError(f"{emb_path}: {emb.shape[1]} dimensions, the limit is {schema.MAX_EMBEDDING_DIM}")
    if entry and emb.dtype != np.float16:
        raise UbpError(f"{emb_path}: embeddings must be float16, got {emb.dtype}")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise UbpError(f"{ids_path}: {int((counts > 1).sum())} duplicate client ids (e.g. {int(unique[counts > 1][0])})")
    if relevant is not None:
        relevant = np.asarray(relevant, dtype=np.int64)
        missing, extra = np.setdiff1d(relevant, unique), np.setdiff1d(unique, relevant)
        if len(missing) or len(extra):
            example = f"missing e.g. {int(missing[0])}" if len(missing) else f"unexpected e.g. {int(extra[0])}"
            raise UbpError(f"{ids_path}: the ids must be exactly the {len(relevant)} relevant clients "
                           f"({len(missing)} missing, {len(extra)} not relevant; {example})")
    if entry:
        check_finite(emb, emb_path)
    return Stored(directory, ids, emb)


def check_finite(x: np.ndarray, path: Path) -> None:
    """UbpError naming the count and first row of NaN or inf values, read a block of rows at a time."""
    step = max(1, BLOCK_BYTES // max(1, x.shape[1] * x.dtype.itemsize))
    bad, first = 0, None
    for start in range(0, len(x), step):
        rows = ~np.isfinite(np.asarray(x[start:start + step])).all(axis=1)
        if rows.any() and first is None:
            first = start + int(np.argmax(rows))
        bad += int(rows.sum())
    if bad:
        raise UbpError(f"{path}: NaN or inf values in {bad} rows (first in row {first})")
