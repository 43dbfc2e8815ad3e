"""Targets stage (SPEC §4): label sets, popularity, active clients and the six tasks' label matrices.

Label sets and active clients are read from the canonical `target/` directory when the user's data
shipped them (the official pipeline only reads them) and computed by our definitions otherwise.
Label matrices: one SQL join gives the distinct (client row, label column) pairs of a window, and
numpy scatters them into a clients x labels uint8 matrix.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ubp import schema as S
from ubp.data.ingest import check_id_array, connect, scan
from ubp.data.split import load_split_info
from ubp.features.sources import FeaturesConfig
from ubp.io import UbpError, atomic_dir, load_npy, save_json
from ubp.params import PARAMS_FILE, load_params, section_config

log = logging.getLogger("ubp.targets")

SUMMARY_FILE = "summary.json"
WINDOWS = (S.TRAIN_TARGET, S.VALIDATION_TARGET)


@dataclass(frozen=True)
class TargetsConfig:
    """params.yaml's `targets:` section (also read by ubp.selection's inner labels)."""
    n_labels: int = S.N_TARGET_LABELS  # labels of the category and SKU propensity tasks (the official L)

    def __post_init__(self):
        if self.n_labels < 1:
            raise UbpError(f"params.yaml: targets.n_labels must be a whole number >= 1, got {self.n_labels}")

    @classmethod
    def from_params(cls, params: Mapping) -> "TargetsConfig":
        return section_config(params, cls, "targets")


class Windows:
    """SQL sources over the split outputs."""

    def __init__(self, split_dir: Path):
        self.split_dir = Path(split_dir)
        for name in (*WINDOWS, *(f"input/{e}" for e in S.PRODUCT_EVENTS)):
            if not (self.split_dir / f"{name}.parquet").is_file():
                raise UbpError(f"{self.split_dir / name}.parquet: file not found (run `python -m ubp split` first)")

    def window(self, name: str) -> str:
        return scan(self.split_dir / f"{name}.parquet")

    def input(self, event: str) -> str:
        return scan(self.split_dir / "input" / f"{event}.parquet")


def top_labels(con, source: str, column: str, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """The n_labels most frequent values of `column` in `source` (count desc, id asc) and their counts."""
    rows = con.execute(f"SELECT {column}, count(*) AS n FROM {source} GROUP BY {column} "
                       f"ORDER BY n DESC, {column} ASC LIMIT {int(n_labels)}").fetchnumpy()
    return rows[column].astype(np.int64), rows["n"].astype(np.int64)


def compute_label_set(con, w: Windows, task: str, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    train = w.window(S.TRAIN_TARGET)
    if task in (S.PROPENSITY_CATEGORY, S.PROPENSITY_SKU):
        return top_labels(con, train, S.PROPENSITY_COLUMN[task], n_labels)
    if task == S.PROPENSITY_NEW_SKU:
        seen = " UNION ".join(f"SELECT {S.SKU} FROM {w.input(e)}" for e in S.PRODUCT_EVENTS)
        both = f"SELECT {S.SKU} FROM {train} UNION ALL SELECT {S.SKU} FROM {w.window(S.VALIDATION_TARGET)}"
        source = f"(SELECT {S.SKU} FROM ({both}) WHERE {S.SKU} NOT IN ({seen}))"
        return top_labels(con, source, S.SKU, n_labels)
    if task == S.PROPENSITY_PRICE:  # every bucket bought, ascending: not capped at n_labels
        rows = con.execute(f"SELECT {S.PRICE}, count(*) AS n FROM {train} GROUP BY {S.PRICE} "
                           f"ORDER BY {S.PRICE}").fetchnumpy()
        return rows[S.PRICE].astype(np.int64), rows["n"].astype(np.int64)
    raise ValueError(task)


def compute_active_clients(con, input_buys: str, relevant: np.ndarray) -> np.ndarray:
    """Relevant clients with >= 1 purchase before train_target_start (`input_buys`: the input
    purchases' SQL source), in relevant_clients order."""
    buyers = con.execute(f"SELECT DISTINCT {S.CLIENT_ID} FROM {input_buys}").fetchnumpy()[S.CLIENT_ID]
    return relevant[np.isin(relevant, buyers)]


def provided(target_dir: Path, name: str) -> np.ndarray | None:
    path = target_dir / name
    return check_id_array(path, load_npy(path), "a target file") if path.is_file() else None


def label_set(target_dir: Path, task: str, compute, where: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(label ids, popularity, 'read'|'computed') of a propensity task: the files the data shipped in
    `target_dir` (both or neither), else `compute()`, which must find a label in `where`'s purchases."""
    names = S.label_file(task), S.popularity_file(task)
    labels, popularity = (provided(target_dir, n) for n in names)
    if (labels is None) != (popularity is None):
        raise UbpError(f"{target_dir}: {names[0]} and {names[1]} must be provided together")
    if labels is None:
        labels, popularity = compute()
        if labels.size == 0:
            raise UbpError(f"{where}: no purchases to choose {task} labels from")
        return labels, popularity, "computed"
    if labels.size != popularity.size:
        raise UbpError(f"{target_dir / names[1]}: {popularity.size} values for {labels.size} labels")
    return labels, popularity, "read"


def label_sets(con, w: Windows, target_dir: Path, relevant: np.ndarray, n_labels: int) -> tuple[dict, dict]:
    """({name: array} for the label, popularity and active-client files, {name: 'read'|'computed'})."""
    arrays, sources = {}, {}
    for task in S.PROPENSITY_TASKS:
        labels, popularity, source = label_set(target_dir, task, lambda: compute_label_set(con, w, task, n_labels),
                                               w.split_dir)
        for name, array in zip((S.label_file(task), S.popularity_file(task)), (labels, popularity)):
            arrays[name] = array
            sources[name] = source
    active = provided(target_dir, S.ACTIVE_CLIENTS_FILE)
    sources[S.ACTIVE_CLIENTS_FILE] = "computed" if active is None else "read"
    arrays[S.ACTIVE_CLIENTS_FILE] = (compute_active_clients(con, w.input(S.PRODUCT_BUY), relevant)
                                     if active is None else active)
    return arrays, sources


def hit_pairs(con, source: str, clients: np.ndarray, column: str | None = None,
              labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (client row, label column) pairs with a purchase in `source`; column is 0 if no labels."""
    con.register("task_clients", pa.table({"client_id": clients, "row_index": np.arange(clients.size)}))
    if labels is None:
        sql = (f"SELECT DISTINCT c.row_index, 0 AS col_index FROM {source} w "
               f"JOIN task_clients c ON w.{S.CLIENT_ID} = c.client_id")
    else:
        con.register("task_labels", pa.table({"label_id": labels, "col_index": np.arange(labels.size)}))
        sql = (f"SELECT DISTINCT c.row_index, l.col_index FROM {source} w "
               f"JOIN task_clients c ON w.{S.CLIENT_ID} = c.client_id JOIN task_labels l ON w.{column} = l.label_id")
    pairs = con.execute(sql).fetchnumpy()
    return pairs["row_index"].astype(np.int64), pairs["col_index"].astype(np.int64)


def label_matrix(con, source: str, task: str, clients: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    if task in S.BINARY_TASKS:  # 1 = no purchase in the window
        rows, _ = hit_pairs(con, source, clients)
        y = np.ones((clients.size, 1), dtype=np.uint8)
        y[rows, 0] = 0
        return y
    rows, cols = hit_pairs(con, source, clients, S.PROPENSITY_COLUMN[task], labels)
    y = np.zeros((clients.size, labels.size), dtype=np.uint8)
    y[rows, cols] = 1
    return y


def task_summary(task: str, y: dict[str, np.ndarray]) -> dict:
    summary = {"official_name": S.OFFICIAL_TASK_NAMES.get(task, task),
               "n_clients": int(y[S.TRAIN_TARGET].shape[0]), "n_labels": int(y[S.TRAIN_TARGET].shape[1])}
    for window, key in zip(WINDOWS, ("train", "validation")):
        summary[f"positives_{key}"] = int(y[window].sum())
    for window, key in zip(WINDOWS, ("train", "validation")):
        summary[f"labels_without_positive_{key}"] = int((y[window].sum(0) == 0).sum())
    for window, key in zip(WINDOWS, ("train", "validation")):  # AUROC scores these 0 too
        summary[f"labels_without_negative_{key}"] = int((y[window].sum(0) == y[window].shape[0]).sum())
    return summary


def build_targets(canonical_dir: Path = S.CANONICAL_DIR, split_dir: Path = S.SPLIT_DIR,
                  out_dir: Path = S.TARGETS_DIR, cfg: TargetsConfig = TargetsConfig(),
                  memory_limit: str | None = None, temp_directory: str | Path | None = None) -> None:
    """Write the label-set files, active_clients.npy, labels/<task>.npz and summary.json."""
    canonical_dir, out_dir = Path(canonical_dir), Path(out_dir)
    load_split_info(split_dir)  # fails clearly if the split is missing
    w = Windows(split_dir)
    relevant_path = canonical_dir / S.RELEVANT_CLIENTS_FILE
    relevant = check_id_array(relevant_path, load_npy(relevant_path), "relevant clients")
    with connect(memory_limit, temp_directory) as con:
        arrays, sources = label_sets(con, w, canonical_dir / "target", relevant, cfg.n_labels)
        active = np.isin(relevant, arrays[S.ACTIVE_CLIENTS_FILE])
        summary = {}
        with atomic_dir(out_dir) as tmp:
            for name, array in arrays.items():
                np.save(tmp / name, array, allow_pickle=False)
            (tmp / S.LABELS_SUBDIR).mkdir()
            for task in S.TASKS:
                clients = relevant[active] if task == S.CHURN else relevant
                labels = arrays[S.label_file(task)] if task in S.PROPENSITY_TASKS else None
                y = {window: label_matrix(con, w.window(window), task, clients, labels) for window in WINDOWS}
                extra = {} if labels is None else {"label_ids": labels, "popularity": arrays[S.popularity_file(task)]}
                np.savez(tmp / S.LABELS_SUBDIR / f"{task}.npz", client_ids=clients, y_train=y[S.TRAIN_TARGET],
                         y_validation=y[S.VALIDATION_TARGET], **extra)
                summary[task] = task_summary(task, y)
            summary["sources"] = sources
            save_json(tmp / SUMMARY_FILE, summary)
    for kind in ("read", "computed"):
        names = [n for n, s in sources.items() if s == kind]
        log.info("%s: %s", kind, ", ".join(names) or "none")
    for task in S.TASKS:
        s = summary[task]
        log.info("%s: %d clients x %d labels, positives %d / %d, labels without positive %d / %d", task,
                 s["n_clients"], s["n_labels"], s["positives_train"], s["positives_validation"],
                 s["labels_without_positive_train"], s["labels_without_positive_validation"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ubp targets", description=__doc__.splitlines()[0])
    parser.add_argument("--canonical-dir", type=Path, default=S.CANONICAL_DIR)
    parser.add_argument("--split-dir", type=Path, default=S.SPLIT_DIR)
    parser.add_argument("--out-dir", type=Path, default=S.TARGETS_DIR)
    args = parser.parse_args(argv)
    params = load_params() if PARAMS_FILE.exists() else {}
    cfg, features = TargetsConfig.from_params(params), FeaturesConfig.from_params(params)  # a typo stops here
    build_targets(args.canonical_dir, args.split_dir, args.out_dir, cfg, **features.resources)
    return 0
