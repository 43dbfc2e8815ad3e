"""The labels `ubp.combine.selection` scores on: the three open tasks' train-window labels, built from the
train window and the input events alone.

Choosing ensemble sources must not read the validation window, nor the hidden tasks (conversion,
new SKU, price), which only measure how a profile generalises to tasks nobody tuned for. The
targets stage's `labels/<task>.npz` hold both windows, and its new-SKU label set and popularity are
counted over both windows' purchases, so this module reads nothing of `data/targets`. It reads the
relevant clients and, when the user's data shipped them, the open tasks' label sets and the active
clients (`canonical/target/`, which the targets stage also reads as they are); the train window's
purchases (`split/train_target.parquet`); and the input purchases (`split/input/product_buy.parquet`,
whose buyers are the active clients otherwise). Definitions and SQL are the targets stage's
(SPEC §4, `ubp.data.targets`), so the result equals that stage's `client_ids`, `y_train`,
`label_ids` and `popularity` of the open tasks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ubp import schema as S
from ubp.data.ingest import check_id_array, connect, scan
from ubp.data.targets import compute_active_clients, label_matrix, label_set, provided, top_labels
from ubp.io import UbpError, load_npy

TARGET_SUBDIR = "target"  # inside the canonical directory: the label sets the data shipped


def required(path: Path) -> Path:
    if not path.is_file():
        raise UbpError(f"{path}: file not found (run `python -m ubp ingest` and `python -m ubp split` first)")
    return path


def open_train_labels(canonical_dir: Path = S.CANONICAL_DIR, split_dir: Path = S.SPLIT_DIR,
                      n_labels: int = S.N_TARGET_LABELS, memory_limit: str | None = None,
                      temp_directory: str | Path | None = None) -> dict[str, dict]:
    """{task: {client_ids, y_train[, label_ids, popularity]}} for churn, category and SKU propensity,
    clients in relevant-client order (churn: the active ones), as the targets stage orders them."""
    canonical_dir, split_dir = Path(canonical_dir), Path(split_dir)
    relevant_path = required(canonical_dir / S.RELEVANT_CLIENTS_FILE)
    relevant = check_id_array(relevant_path, load_npy(relevant_path), "relevant clients")
    train = scan(required(split_dir / f"{S.TRAIN_TARGET}.parquet"))
    buys = scan(required(split_dir / "input" / f"{S.PRODUCT_BUY}.parquet"))
    shipped_dir = canonical_dir / TARGET_SUBDIR
    out = {}
    with connect(memory_limit, temp_directory) as con:
        active = provided(shipped_dir, S.ACTIVE_CLIENTS_FILE)
        churn_clients = (compute_active_clients(con, buys, relevant) if active is None
                         else relevant[np.isin(relevant, active)])
        out[S.CHURN] = {"client_ids": churn_clients,
                        "y_train": label_matrix(con, train, S.CHURN, churn_clients, None)}
        for task in (S.PROPENSITY_CATEGORY, S.PROPENSITY_SKU):
            labels, popularity, _ = label_set(
                shipped_dir, task, lambda: top_labels(con, train, S.PROPENSITY_COLUMN[task], n_labels),
                split_dir / f"{S.TRAIN_TARGET}.parquet")
            out[task] = {"client_ids": relevant, "y_train": label_matrix(con, train, task, relevant, labels),
                         "label_ids": labels, "popularity": popularity}
    assert tuple(out) == S.OPEN_TASKS
    return out
