"""The ceiling: each client's true latent state at the split, written by the synthetic generator.

The generator names its columns by kind (see `oracle/columns.json`): `category_<id>` and
`sku_<id>` are the client's probability of choosing that category / SKU when it buys, and
`log_buys_14d` its expected number of purchases in the next 14 days. The profile turns these into
log expected purchases of each category / SKU, the quantity the propensity tasks ask about, so a
linear read-out suffices; every column is then standardised.
"""
import json

import numpy as np

from ubp import schema
from ubp.io import UbpError, load_npy
from ubp.models.base import EmbedContext, ProfileUnavailable

CHOICE_PREFIXES = ("category_", "sku_")
EXPECTED_BUYS = "log_buys_14d"


def expected_purchases(state: np.ndarray, columns: list[str]) -> np.ndarray:
    """log P(choice) + log E[buys] for the choice columns; other columns unchanged."""
    out = state.astype(np.float64).copy()
    if EXPECTED_BUYS not in columns:
        return out
    log_buys = out[:, columns.index(EXPECTED_BUYS)]
    for j, name in enumerate(columns):
        if name.startswith(CHOICE_PREFIXES):
            out[:, j] = np.log(np.clip(out[:, j], 0.0, None) + 1e-6) + log_buys
    return out


def embed(ctx: EmbedContext, cfg: dict) -> np.ndarray:
    oracle_dir = ctx.synthetic_dir / schema.ORACLE_SUBDIR
    if not (oracle_dir / "state.npy").exists():
        raise ProfileUnavailable(f"no latent state in {oracle_dir}: the oracle exists only for synthetic data")
    ids = load_npy(oracle_dir / "client_ids.npy")
    columns = json.loads((oracle_dir / "columns.json").read_text())
    state = load_npy(oracle_dir / "state.npy")
    if state.shape != (len(ids), len(columns)):
        raise UbpError(f"{oracle_dir / 'state.npy'}: shape {state.shape}, expected ({len(ids)}, {len(columns)})")
    row = {int(c): i for i, c in enumerate(ids)}
    missing = [int(c) for c in ctx.client_ids if int(c) not in row]
    if missing:
        raise UbpError(f"{oracle_dir / 'client_ids.npy'}: {len(missing)} clients to embed have no state (e.g. {missing[0]})")
    state = expected_purchases(state[[row[int(c)] for c in ctx.client_ids]], columns)
    # Standardised so no latent variable dominates the downstream network by its scale alone.
    std = state.std(axis=0)
    return ((state - state.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)
