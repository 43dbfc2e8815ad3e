"""Cleora graph embeddings of a client–entity hypergraph (Synerise's engine, `pycleora`).

Why Cleora: it is the graph engine behind Synerise's own behavioural models, CPU-only (Rust) and built
for billions of edges; a client's vector is defined by its neighbourhood alone (initial vectors are a
hash of the entity's name, so they are stable across runs and datasets), hence it says "who
co-interacts with whom", which one client's own counts cannot.

The graph: one hyperedge per fitted client (`_graph`: the relevant clients plus a seeded sample of
others up to `max_fit_clients`) joining it to every kept entity it touched before the cutoff — SKUs
bought, added or removed, their categories, visited URLs and search-query code tokens (`kinds`;
each entity kind's vocabulary capped by `min_clients` and `max_items`). pycleora 3 takes one relation
(client — entity), so the kinds share one entity column, kept apart by a prefix. `iterations` rounds of
its left-Markov propagation (each row the average of its neighbours), L2 normalisation and, with
`whiten`, whitening, at `dim` dimensions, give every entity a vector.

A client's profile is its own node's vector, L2-normalised (zeros without a kept entity). Every
relevant client is a node, so none is unseen; a vector for a client outside the graph would be one
more propagation step from its entities (Cleora's inductivity), but pycleora's `embed_inductive`
re-embeds the whole graph and starts new nodes from unseeded random vectors, so it is not used; on
the default data the mean of the entities' vectors also scored below the node's own vector.

Determinism: pycleora's initial vectors hash entity names (seeded by `seed`), its propagation gives the
same bytes for any number of workers (checked), whitening runs under one BLAS thread (threadpoolctl);
lines and tokens are built in a fixed order, so one cfg gives byte-identical profiles.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from ubp import schema
from ubp.features.build import connect_for
from ubp.io import UbpError
from ubp.models import _graph as G
from ubp.models.base import EmbedContext, EmbeddingConfig

READS = ("events", "properties")
PREFIX = {"sku": "s", "category": "k", "url": "u", "query": "q"}
COLUMNS = "client complex::entity"  # one relation: a client and the entities on its hyperedge


@dataclass(frozen=True)
class Config(EmbeddingConfig):
    dim: int = 128
    iterations: int = 8  # inner objective (open tasks, train window) 1.872 vs 1.856 at 4, 1.800 at 2
    whiten: bool = True  # pycleora's default: without it every client drifts to one vector
    kinds: tuple[str, ...] = ("sku", "category", "url")  # "query" too: lowered the inner objective
    min_clients: int = 2  # an entity enters the graph when at least this many fitted clients touched it
    max_items: int = 1_000_000  # per kind, most touched first
    max_fit_clients: int = 1_500_000  # relevant clients + a seeded sample of others, in all
    threads: int = 2  # DuckDB threads and pycleora workers
    # seed (embedding.seed): the hash of pycleora's initial vectors and the fit sample

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in G.KINDS]
        if bad or not self.kinds or len(set(self.kinds)) != len(self.kinds):
            raise UbpError(f"params.yaml: cleora.kinds must be distinct names among {', '.join(G.KINDS)}; "
                           f"got {list(self.kinds)}")
        if self.dim < 1 or self.iterations < 1 or self.min_clients < 1 or self.threads < 1:
            raise UbpError(f"params.yaml: cleora needs dim, iterations, min_clients, threads >= 1; got "
                           f"{self.dim}, {self.iterations}, {self.min_clients}, {self.threads}")


ALL_WEIGHTS = {t: 1.0 for t in schema.EVENT_TYPES}  # Cleora's edges are unweighted: each entity once


def hyperedges(con, kinds: tuple[str, ...]):
    """'c<row>\\t<token> <token> ...' per fitted client with kept entities, rows ascending, tokens sorted."""
    tokens = " UNION ALL ".join(f"SELECT row, '{PREFIX[k]}' || col AS token FROM kept_{k}" for k in kinds)
    reader = con.sql(f"SELECT 'c' || row || chr(9) || string_agg(token, ' ' ORDER BY token) AS line "
                         f"FROM ({tokens}) GROUP BY row ORDER BY row").to_arrow_reader(65_536)
    for batch in reader:
        yield from batch.column(0).to_pylist()


def cleora_vectors(lines, names: list[str], cfg: Config) -> np.ndarray:
    """Cleora vectors (cfg.iterations rounds) of the named nodes, which must be in the graph."""
    import pycleora

    graph = pycleora.SparseMatrix.from_iterator(lines, COLUMNS, num_workers=cfg.threads)
    with threadpool_limits(1, "blas"):
        vectors = pycleora.embed(graph, feature_dim=cfg.dim, num_iterations=cfg.iterations, seed=cfg.seed,
                                 num_workers=cfg.threads, whiten=cfg.whiten)
    return vectors[np.asarray(graph.get_entity_indices(names), dtype=np.int64)]


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    n_rel = len(ctx.client_ids)
    out = np.zeros((n_rel, cfg.dim), np.float32)
    with connect_for(ctx.feature_settings, threads=cfg.threads) as con:
        n_fit = G.fit_clients(con, ctx, cfg.max_fit_clients, cfg.seed)
        sizes = {k: int(len(G.pairs(con, ctx, k, ALL_WEIGHTS, cfg.min_clients, cfg.max_items, n_fit,
                                    table=f"kept_{k}", fetch_below=0).items)) for k in cfg.kinds}
        rows = con.execute(" UNION ".join(f"SELECT row FROM kept_{k} WHERE row < {n_rel}" for k in cfg.kinds)
                           + " ORDER BY row").fetchnumpy()["row"].astype(np.int64)  # relevant nodes of the graph
        ctx.info.update(fit_clients=int(n_fit), entities=sizes, relevant_in_graph=int(len(rows)))
        if len(rows):
            out[rows] = cleora_vectors(hyperedges(con, cfg.kinds), [f"c{r}" for r in rows], cfg)
    return normalize(out.astype(np.float64), norm="l2", axis=1).astype(np.float32)
