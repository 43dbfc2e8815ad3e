"""Implicit ALS (Hu, Koren & Volinsky 2008) on client × category and client × URL (SPEC §9.4, seed 001's
2nd place: "iALS categories" and "iALS page visits", 64 factors each).

Why `implicit`: the maintained CPU implementation of iALS (Cython + OpenMP, conjugate-gradient
solver), the one the 2nd place used; a client's factors say which categories / pages it shares
with whom, beyond its own counts.

One matrix per block (`factors`, 0 drops a block), fitted clients × kept entities (`_graph`: the
relevant clients plus a seeded sample of others up to `max_fit_clients`; an entity kept when at least
`min_clients` of them touched it, at most `max_items` per block):
* `category`: product events weighted by type (`weights`: buy 3, add to cart 1, remove 0 as the seed);
* `url`: page visits, 1 each.
A cell is the client's summed weight r; implicit takes it as the confidence of a positive,
C = 1 + `alpha`·r (its documented convention), with every empty cell a negative of confidence 1.
`alpha` and `regularization` were chosen on the default data (reports/bench/graph_profiles.md).
The profile: each block's client factors, rows L2-normalised (a client with no kept entity in a
block gets zeros there), concatenated.

Determinism: the initial factors come from `random_state = seed`; each client's (item's) solve is
independent of the others, so the OpenMP thread count (`threads`) changes nothing, and BLAS runs
single-threaded (threadpoolctl, as implicit asks: a multi-threaded OpenBLAS is also its slow path,
and could change the last bits of Yᵀ·Y). One cfg gives byte-identical profiles.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from ubp import schema
from ubp.features.build import connect_for
from ubp.io import UbpError
from ubp.models import _graph as G
from ubp.models.base import EmbedContext, EmbeddingConfig

READS = ("events", "properties")
BLOCKS = ("category", "url")


@dataclass(frozen=True)
class Factors:
    """Factors per block; 0 drops the block."""
    category: int = 64
    url: int = 64


@dataclass(frozen=True)
class Weights:
    """Weight of one event of each type in its block's cells (category: product events; url: visits)."""
    product_buy: float = 3.0
    add_to_cart: float = 1.0
    remove_from_cart: float = 0.0
    page_visit: float = 1.0


@dataclass(frozen=True)
class Config(EmbeddingConfig):
    factors: Factors = Factors()
    weights: Weights = Weights()
    alpha: float = 2.0  # confidence of a positive: 1 + alpha * r (inner objective: 2 > 10 ≈ 40)
    regularization: float = 1.0  # inner objective: 1.0 > 0.05 (reports/bench/graph_profiles.md)
    iterations: int = 15
    min_clients: int = 2
    max_items: int = 1_000_000  # per block, most touched first
    max_fit_clients: int = 2_000_000  # relevant clients + a seeded sample of others, in all
    threads: int = 2  # implicit's OpenMP threads and DuckDB threads
    # seed (embedding.seed): the initial factors and the fit sample

    def __post_init__(self):
        if min(self.factors.category, self.factors.url) < 0 or not (self.factors.category or self.factors.url):
            raise UbpError(f"params.yaml: ials.factors must be >= 0 and not all 0, got {self.factors}")
        if self.alpha <= 0 or self.regularization < 0 or self.iterations < 1 or self.threads < 1:
            raise UbpError(f"params.yaml: ials needs alpha > 0, regularization >= 0, iterations >= 1, threads >= 1; "
                           f"got {self.alpha}, {self.regularization}, {self.iterations}, {self.threads}")


def factorize(x: sp.csr_matrix, factors: int, cfg: Config, with_items: bool = False):
    """Client (row) factors of implicit's ALS on the confidence matrix x (rows without entries: zeros),
    and the item factors too with `with_items`."""
    from implicit.cpu.als import AlternatingLeastSquares

    if x.shape[1] == 0 or x.nnz == 0:
        users, items = np.zeros((x.shape[0], factors), np.float32), np.zeros((x.shape[1], factors), np.float32)
        return (users, items) if with_items else users
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=factors, regularization=cfg.regularization, alpha=cfg.alpha,
                                        iterations=cfg.iterations, num_threads=cfg.threads, random_state=cfg.seed)
        model.fit(x, show_progress=False)
    users = np.asarray(model.user_factors, dtype=np.float32)
    users[np.diff(x.indptr) == 0] = 0.0  # no positive: its solve only shrinks the random start
    return (users, np.asarray(model.item_factors, dtype=np.float32)) if with_items else users


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    n_rel = len(ctx.client_ids)
    weights = {t: getattr(cfg.weights, t) for t in (*schema.PRODUCT_EVENTS, schema.PAGE_VISIT)}
    blocks, sizes = [], {}
    with connect_for(ctx.feature_settings, threads=cfg.threads) as con:
        n_fit = G.fit_clients(con, ctx, cfg.max_fit_clients, cfg.seed)
        for block in BLOCKS:
            k = getattr(cfg.factors, block)
            if k <= 0:
                continue
            kept = G.pairs(con, ctx, block, weights, cfg.min_clients, cfg.max_items, n_fit)
            sizes[block] = int(len(kept.items))
            users = factorize(kept.matrix(), k, cfg)[:n_rel]
            blocks.append(normalize(users.astype(np.float64), norm="l2", axis=1).astype(np.float32))
    ctx.info.update(fit_clients=int(n_fit), items=sizes)
    return np.concatenate(blocks, axis=1)
