"""The ceiling: each client's true latent state at the split, written by the synthetic generator."""
import numpy as np

from ubp import schema
from ubp.io import UbpError, load_npy
from ubp.models.base import EmbedContext, ProfileUnavailable


def embed(ctx: EmbedContext, cfg: dict) -> np.ndarray:
    oracle_dir = ctx.synthetic_dir / schema.ORACLE_SUBDIR
    if not (oracle_dir / "state.npy").exists():
        raise ProfileUnavailable(f"no latent state in {oracle_dir}: the oracle exists only for synthetic data")
    ids = load_npy(oracle_dir / "client_ids.npy")
    state = load_npy(oracle_dir / "state.npy").astype(np.float32)
    row = {int(c): i for i, c in enumerate(ids)}
    missing = [int(c) for c in ctx.client_ids if int(c) not in row]
    if missing:
        raise UbpError(f"{oracle_dir / 'client_ids.npy'}: {len(missing)} clients to embed have no state (e.g. {missing[0]})")
    state = state[[row[int(c)] for c in ctx.client_ids]]
    # Standardised so no latent variable dominates the downstream network by its scale alone.
    std = state.std(axis=0)
    return (state - state.mean(axis=0)) / np.where(std > 0, std, 1.0)
