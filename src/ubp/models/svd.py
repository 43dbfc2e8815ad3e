"""Truncated SVD of tf-idf weighted client × item matrices (SPEC §9.3).

One block per matrix, concatenated:

* `sku`, `category`, `price`: product events (buy, add to cart, remove from cart), each event weighted
  by its type (`weights`, default buy 3 > add 2 > remove 1: a purchase says most about taste, a
  removal still says the client looked). Category and price come from product_properties.
* `url`: page visits, weight 1 each.
* `query`: search queries as a bag of (code position, code value) tokens — 16 × 256 columns — so that
  queries sharing codes are similar even when not identical (identical queries are rare tokens).
* `activity`: log1p of the client's number of events of each type, divided by the largest over the
  clients (in [0, 1]). SVD blocks are unit-norm, so without it a client with one purchase and one
  with a hundred look alike; churn/conversion need the volume.

Each matrix cell is the sum of the client's event weights on that item (optionally decayed by age,
`half_life_days`; off by default). tf-idf: tf = log1p(weighted count), idf = log((1 + n) / (1 + df))
+ 1 over the clients the SVD is fitted on, rows L2-normalised. Items seen by fewer than `min_df`
clients are dropped (they cannot tie clients together), and at most `max_items` items (most
frequent first) are kept per block, which bounds memory on the 12.7M real URLs.

Fitting: item factors are fitted on the relevant clients plus, with `fit_on: all` (default), other
clients with events up to `max_fit_clients` in total (a seeded hash sample). The extra clients cost
little and give many more co-occurrences, hence better factors for rare items; the cap keeps the
dense n_rows × (k + 10) panels of the randomized SVD in memory on the 18.7M real clients.
A block with few columns (≤ `exact_max_cols`) is decomposed exactly from its Gram matrix; larger
ones with scikit-learn's randomized SVD (fixed random_state = seed). Each component's sign is fixed
so that its largest-magnitude item loading is positive, so results are byte-for-byte reproducible.

A relevant client's block vector is its tf-idf row projected on the item factors, X·V·diag(s)^(p−1)
with p = `sigma_power` (1: U·S, components weighted by their singular values; 0: whitened U),
then L2-normalised per block so that every block counts alike. Missing components (a matrix with
fewer items or clients than `dims` asks for) are zero columns, so the width depends on cfg only.
A client with no (kept) events in a block gets a zero block; with no events at all, a zero row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from sklearn.preprocessing import normalize
from sklearn.utils.extmath import randomized_svd

from ubp import schema
from ubp.features.build import connect_for
from ubp.models.base import EmbedContext, EmbeddingConfig

READS = ("events", "properties")


@dataclass(frozen=True)
class Dims:
    """Components per block; 0 drops the block."""
    sku: int = 64
    category: int = 32
    price: int = 16
    url: int = 64
    query: int = 16


@dataclass(frozen=True)
class Weights:
    """Weight of one event of each type in its block's matrix cells."""
    product_buy: float = 3.0
    add_to_cart: float = 2.0
    remove_from_cart: float = 1.0
    page_visit: float = 1.0
    search_query: float = 1.0


@dataclass(frozen=True)
class Config(EmbeddingConfig):
    dims: Dims = Dims()
    weights: Weights = Weights()
    half_life_days: float | None = None  # e.g. 30: an event `half_life_days` old counts half; None: no decay
    fit_on: Literal["all", "relevant"] = "all"  # "all": relevant + other clients with events
    max_fit_clients: int = 4_000_000
    min_df: int = 2
    max_items: int = 1_000_000
    exact_max_cols: int = 1024
    n_iter: int = 5  # power iterations of the randomized SVD
    n_oversamples: int = 10
    sigma_power: float = 1.0
    activity: bool = True
    threads: int | None = None  # DuckDB threads; None: all cores
    # seed (embedding.seed): random_state of the randomized SVD and of the fit sample


WEIGHT_UNITS = 1000  # weights are summed as integers (units of 1/1000) so parallel sums are exact
QUERY_VOCAB = schema.VECTOR_DIM * 256

# block -> (event types feeding it, SQL of its item column over events `e` joined with properties `p`)
BLOCKS = {
    "sku": (schema.PRODUCT_EVENTS, "e.sku"),
    "category": (schema.PRODUCT_EVENTS, "p.category"),
    "price": (schema.PRODUCT_EVENTS, "p.price"),
    "url": ((schema.PAGE_VISIT,), "e.url"),
    "query": ((schema.SEARCH_QUERY,), None),
}


def _cutoff(ctx: EmbedContext) -> str:
    return f"TIMESTAMP '{ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)}'"


def _weighted_events_sql(ctx: EmbedContext, block: str, cfg: Config) -> str:
    """client_id, item, w: one row per (event, item) of the block, input events only."""
    event_types, item = BLOCKS[block]
    decay = "1.0"
    if cfg.half_life_days:
        age_days = f"date_diff('second', e.timestamp, {_cutoff(ctx)}) / 86400.0"
        decay = f"pow(0.5, {age_days} / {float(cfg.half_life_days)})"
    parts = []
    for event_type in event_types:
        weight = float(getattr(cfg.weights, event_type))
        if weight <= 0:
            continue
        source = f"read_parquet('{ctx.events(event_type)}') e"
        where = f"WHERE e.timestamp < {_cutoff(ctx)}"
        if block == "query":  # token = position * 256 + code, one per query code
            parts.append(
                f"SELECT client_id, off + code AS item, w FROM (SELECT e.client_id, "
                f"unnest(range(0, {QUERY_VOCAB}, 256)) AS off, unnest(e.query) AS code, "
                f"{weight} * {decay} AS w FROM {source} {where})")
            continue
        if item.startswith("p."):
            source += f" JOIN read_parquet('{ctx.properties_path}') p USING (sku)"
        parts.append(f"SELECT e.client_id, {item} AS item, {weight} * {decay} AS w FROM {source} {where}")
    return " UNION ALL ".join(parts)


def _fit_clients(con, ctx: EmbedContext, cfg: Config) -> int:
    """Table `fit(client_id, row)`: relevant clients first (rows 0..n-1, ctx order), then a sample."""
    n_rel = len(ctx.client_ids)
    con.execute("CREATE TEMP TABLE fit AS SELECT client_id, row FROM relevant")
    extra = cfg.max_fit_clients - n_rel
    if cfg.fit_on == "all" and extra > 0:
        active = " UNION ".join(
            f"SELECT client_id FROM read_parquet('{ctx.events(t)}') WHERE timestamp < {_cutoff(ctx)}"
            for t in schema.EVENT_TYPES)
        con.execute(
            f"INSERT INTO fit SELECT client_id, {n_rel - 1} + row_number() OVER "
            f"(ORDER BY hash(client_id + {cfg.seed}), client_id) FROM ({active}) "
            f"WHERE client_id NOT IN (SELECT client_id FROM relevant) "
            f"ORDER BY hash(client_id + {cfg.seed}), client_id LIMIT {extra}")
    return con.execute("SELECT count(*) FROM fit").fetchone()[0]


def tfidf_matrix(con, ctx: EmbedContext, block: str, cfg: Config, n_fit: int) -> sp.csr_matrix:
    """fit rows × kept items, tf-idf weighted, rows L2-normalised, canonical CSR (sorted indices)."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE triples AS SELECT f.row, e.item, "
        f"CAST(sum(CAST(round(e.w * {WEIGHT_UNITS}) AS BIGINT)) AS BIGINT) AS units "
        f"FROM ({_weighted_events_sql(ctx, block, cfg)}) e JOIN fit f USING (client_id) GROUP BY f.row, e.item")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE vocab AS SELECT item, df, "
        f"row_number() OVER (ORDER BY df DESC, item) - 1 AS col FROM "
        f"(SELECT item, count(*) AS df FROM triples WHERE units > 0 GROUP BY item "
        f"HAVING count(*) >= {cfg.min_df}) "
        f"ORDER BY df DESC, item LIMIT {cfg.max_items}")
    df = con.execute("SELECT df FROM vocab ORDER BY col").fetchnumpy()["df"].astype(np.float64)
    t = con.execute(
        "SELECT t.row, v.col, CAST(t.units AS DOUBLE) AS units FROM triples t JOIN vocab v USING (item) "
        "WHERE t.units > 0").fetchnumpy()
    rows, cols = t["row"].astype(np.int64), t["col"].astype(np.int64)
    n_docs = np.count_nonzero(np.bincount(rows, minlength=n_fit))
    idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    values = np.log1p(t["units"] / WEIGHT_UNITS) * idf[cols]
    x = sp.csr_matrix((values.astype(np.float32), (rows, cols)), shape=(n_fit, len(df)))
    x.sort_indices()
    return normalize(x, norm="l2", axis=1, copy=False)


def item_factors(x: sp.csr_matrix, k: int, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """The top-k right singular vectors V (items × k') and singular values s, k' = min(k, rank bound)."""
    k = min(k, *x.shape)
    if k == 0:
        return np.zeros((x.shape[1], 0), np.float32), np.zeros(0, np.float32)
    if x.shape[1] <= cfg.exact_max_cols:
        gram = (x.T @ x).toarray().astype(np.float64)
        eigval, eigvec = np.linalg.eigh(gram)
        order = np.argsort(-eigval, kind="stable")[:k]
        s, v = np.sqrt(np.clip(eigval[order], 0.0, None)), eigvec[:, order]
    else:
        _, s, vt = randomized_svd(x, k, n_oversamples=cfg.n_oversamples, n_iter=cfg.n_iter, random_state=cfg.seed,
                                  flip_sign=False)
        v = vt.T
    biggest = np.abs(v).argmax(axis=0)
    v = v * np.where(v[biggest, np.arange(v.shape[1])] < 0, -1.0, 1.0)
    return v.astype(np.float32), s.astype(np.float32)


def block_vectors(x_relevant: sp.csr_matrix, v: np.ndarray, s: np.ndarray, dim: int, sigma_power: float) -> np.ndarray:
    """Relevant clients' rows projected on the factors (X·V = U·S), rescaled, L2-normalised, zero-padded."""
    z = np.asarray(x_relevant @ v, dtype=np.float64)
    with np.errstate(divide="ignore"):
        scale = np.where(s > 0, np.power(s.astype(np.float64), sigma_power - 1.0), 0.0)
    z = normalize(z * scale, norm="l2", axis=1)
    out = np.zeros((x_relevant.shape[0], dim), np.float32)
    out[:, : z.shape[1]] = z
    return out


def activity(con, ctx: EmbedContext) -> np.ndarray:
    counts = np.zeros((len(ctx.client_ids), len(schema.EVENT_TYPES)))
    for j, event_type in enumerate(schema.EVENT_TYPES):
        r = con.execute(
            f"SELECT c.row, count(*) AS n FROM read_parquet('{ctx.events(event_type)}') e "
            f"JOIN relevant c USING (client_id) WHERE e.timestamp < {_cutoff(ctx)} GROUP BY c.row").fetchnumpy()
        counts[r["row"].astype(np.int64), j] = r["n"]
    logs = np.log1p(counts)
    top = logs.max(axis=0, initial=0.0)
    return (logs / np.where(top > 0, top, 1.0)).astype(np.float32)


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    n_rel = len(ctx.client_ids)
    blocks = []
    with connect_for(ctx.feature_settings, threads=cfg.threads) as con:
        con.register("relevant_arrow", pa.table({"client_id": np.asarray(ctx.client_ids, np.int64),
                                                 "row": np.arange(n_rel, dtype=np.int64)}))
        con.execute("CREATE TEMP TABLE relevant AS SELECT * FROM relevant_arrow")
        n_fit = _fit_clients(con, ctx, cfg)
        for block in BLOCKS:
            dim = getattr(cfg.dims, block)
            if dim <= 0:
                continue
            x = tfidf_matrix(con, ctx, block, cfg, n_fit)
            v, s = item_factors(x, dim, cfg)
            blocks.append(block_vectors(x[:n_rel], v, s, dim, cfg.sigma_power))
        if cfg.activity:
            blocks.append(activity(con, ctx))
    return np.concatenate(blocks, axis=1)
