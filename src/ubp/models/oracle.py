"""The ceiling: each client's true latent state at the split, written by the synthetic generator.

The generator names its columns by kind (see `oracle/columns.json`): `buys_category_<id>`,
`buys_sku_<id>` (new SKUs included) and `buys_price_<bucket>` are the client's expected purchases
per 14 days after the split, computed from its parameters and the catalogue (launch dates, hype);
`p_none_w1/w2` its probability of no purchase in each target window; the rest are traits. The
profile makes everything smooth for a linear read-out: expected counts become log counts (floored
at a small share of the column mean, so negligible expectations do not form a long tail),
probabilities logits; every column is then standardised.
"""
import json
from dataclasses import dataclass

import numpy as np

from ubp import schema
from ubp.io import UbpError, load_npy
from ubp.models.base import STANDARDIZE_COLUMNS, EmbedContext, EmbeddingConfig, ProfileUnavailable, standardize
from ubp.combine.sources import align_rows
from ubp.profile_store import open_matrix

READS = ("synthetic",)
AS_OF = False  # the generator's state at the split, whatever the context's cutoff

COUNT_PREFIXES = ("buys_", "buy_sessions_")
PROB_PREFIX = "p_none_"
COUNT_FLOOR = 0.02  # log(count + COUNT_FLOOR x column mean)


@dataclass(frozen=True)
class Config(EmbeddingConfig):
    """No settings of its own."""


def transform(state: np.ndarray, columns: list[str]) -> np.ndarray:
    """Expected counts -> log, probabilities -> logit; other columns unchanged."""
    out = state.astype(np.float64).copy()
    for j, name in enumerate(columns):
        col = out[:, j]
        if name.startswith(COUNT_PREFIXES):
            col = np.clip(col, 0.0, None)
            out[:, j] = np.log(col + COUNT_FLOOR * col.mean() + 1e-9)
        elif name.startswith(PROB_PREFIX):
            p = np.clip(col, 1e-4, 1 - 1e-4)
            out[:, j] = np.log(p / (1 - p))
    return out


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    """Bounded memory at the real size: the state is mapped, the clients' rows gathered once (float32)
    and transformed and standardised a block of columns at a time, in float64 as before (the bytes of
    the whole-matrix version; 1M clients took 15.9 GB with a float64 copy of everything, twice)."""
    oracle_dir = ctx.synthetic_dir / schema.ORACLE_SUBDIR
    if not (oracle_dir / "state.npy").exists():
        raise ProfileUnavailable(f"no latent state in {oracle_dir}: the oracle exists only for synthetic data")
    ids = load_npy(oracle_dir / "client_ids.npy")
    columns = json.loads((oracle_dir / "columns.json").read_text())
    state = open_matrix(oracle_dir / "state.npy")
    if state.shape != (len(ids), len(columns)):
        raise UbpError(f"{oracle_dir / 'state.npy'}: shape {state.shape}, expected ({len(ids)}, {len(columns)})")
    rows, present = align_rows(ids, ctx.client_ids)
    missing = ctx.client_ids[~present]
    if len(missing):
        raise UbpError(f"{oracle_dir / 'client_ids.npy'}: {len(missing)} clients to embed have no state (e.g. {missing[0]})")
    picked = state[rows]  # float32, the clients' rows in their order
    out = np.empty(picked.shape, dtype=np.float32)
    # Standardised so no latent variable dominates the downstream network by its scale alone.
    for c in range(0, picked.shape[1], STANDARDIZE_COLUMNS):
        block = slice(c, c + STANDARDIZE_COLUMNS)
        standardize(transform(picked[:, block], columns[block]), out=out[:, block])
    return out
