"""TwHIN-style client–item graph embedding (SPEC §9.9, seed 003's 4th place "TwHIN GNN").

Edges: each distinct (client, item, relation) of the input events before the cutoff — relations
`product_buy`, `add_to_cart`, `remove_from_cart` (item = the SKU) and `page_visit` (item = the URL).
Parameters: one learnable vector per client, one translation vector per relation, and item vectors:
a SKU's = a learnable id vector (the `max_skus` SKUs most clients touched, at least `min_clients`;
the others share a zero one) + a small encoder of its name codes, category and price (the sum of
their embeddings through Linear–GELU–Linear), so a cold SKU still has a vector; a URL's = a
learnable id vector (kept URLs only, as `_graph`'s vocabulary: `min_clients`, `max_urls`).
Score p(e) = σ(⟨norm(u), norm(i + r)⟩ / `temperature`) as the seed, with in-batch negatives: in a
batch of edges, every other edge's target is a negative for a client unless it is the same client
or the same item. The seed sums the negatives' log-terms; we average them (the loss then does not
grow with the batch): loss = −log p(e_ii) − mean_j log(1 − p(e_ij)).

Training follows `model:` (`_training.fit`): `val_fraction` of the edges held out for early stopping
(a held-out edge is a link to predict; its client keeps its other edges), `fit_clients` a seeded
sample of the clients whose edges are trained on, `edges_per_epoch` a seeded sample of edges per epoch
(None: all). Client and id tables are sparse (SparseAdam at `embedding_lr`), the rest AdamW at `lr`.
The profile: norm(u) of a client with trained edges; for any other client with edges (outside
`fit_clients`, or all its edges held out), the normalised mean of its edges' norm(i + r) (the
item side is its neighbours' evidence); zeros for a client without edges.

Cost: an epoch is one pass over the distinct edges (page visits are most of them), a B × B score
matrix per batch; at the real size set `fit_clients` (model:) or `edges_per_epoch` to bound it, the
other clients getting the inductive vector above. Held-out edges stop improving after a few epochs
(client vectors overfit their own edges), hence the few epochs its params entry sets.

Determinism: every draw from torch.manual_seed / numpy Generators of the seed, `threads` fixed
(`_training.deterministic`) and torch's deterministic kernels on: with two threads the tables'
sparse and scattered gradients otherwise sum duplicate rows in a varying order (the last bits of
the profile differed run to run). One cfg gives byte-identical profiles. Across CPU models: the
dense weights train with the fused AdamW (`_training.optimizer`), but the tables' SparseAdam has no
fused kernel and takes MKL's square root, which differs between CPU implementations (ubp/portable.py).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ubp import schema
from ubp.features.build import connect_for
from ubp.io import UbpError
from ubp.models import _graph as G
from ubp.models import _training as T
from ubp.models.base import EmbedContext

log = logging.getLogger("ubp.models")
READS = ("events", "properties")
RELATIONS = (*schema.PRODUCT_EVENTS, schema.PAGE_VISIT)
NAME_CODES = schema.VECTOR_DIM * 256
PRICES = 101  # bucket 0..99 -> 1..100; 0 = missing


@dataclass(frozen=True)
class Config(T.TrainingConfig):
    # hidden (model.hidden): the width of every vector = the profile's dimension
    relations: tuple[str, ...] = RELATIONS
    temperature: float = 0.3  # 0.1 (the sharper score) failed the contract's probe on the tiny data
    embedding_lr: float = 0.02  # SparseAdam on the client, SKU-id and URL tables
    max_skus: int = 500_000  # SKUs with an id vector (the rest: encoder only)
    max_urls: int = 1_000_000
    max_categories: int = 10_000
    min_clients: int = 2
    edges_per_epoch: int | None = None
    duckdb_threads: int = 2

    def __post_init__(self):
        super().__post_init__()
        if not self.relations or not set(self.relations) <= set(RELATIONS) or len(set(self.relations)) != len(
                self.relations):
            raise UbpError(f"params.yaml: twhin.relations must be distinct names among {', '.join(RELATIONS)}; "
                           f"got {list(self.relations)}")
        if not self.temperature > 0 or not self.embedding_lr > 0:
            raise UbpError(f"params.yaml: twhin needs temperature > 0 and embedding_lr > 0, got "
                           f"{self.temperature}, {self.embedding_lr}")


@dataclass
class Graph:
    """Edges (client row, item, relation index) and what items are made of. Items 0..n_skus-1 are SKUs
    (product_properties' rows), n_skus.. are kept URLs."""
    client: np.ndarray  # int64
    item: np.ndarray  # int64
    relation: np.ndarray  # int64
    n_clients: int
    sku_slot: np.ndarray  # (n_skus,) int64: id-vector row, 0 = none
    name: np.ndarray  # (n_skus, 16) uint8
    category: np.ndarray  # (n_skus,) int64, 0 = rare or missing
    price: np.ndarray  # (n_skus,) int64, 0 = missing
    n_urls: int

    @property
    def n_skus(self) -> int:
        return len(self.sku_slot)


# ---------------------------------------------------------------------------------------------
# Edges and item attributes, from DuckDB.

def _properties(con, ctx: EmbedContext, max_categories: int) -> tuple[np.ndarray, ...]:
    """sku (sorted), name codes, category index (top max_categories by SKU count, else 0), price + 1."""
    p = con.sql(
        f"WITH p AS (SELECT sku, category, price, name FROM read_parquet('{ctx.properties_path}')), "
        f"c AS (SELECT category, row_number() OVER (ORDER BY count(*) DESC, category) AS idx FROM p "
        f"WHERE category IS NOT NULL GROUP BY category ORDER BY count(*) DESC, category LIMIT {int(max_categories)}) "
        f"SELECT p.sku, coalesce(c.idx, 0) AS cat, coalesce(p.price + 1, 0) AS price, "
        f"coalesce(p.name, []) AS name FROM p LEFT JOIN c USING (category) ORDER BY p.sku").to_arrow_table()
    names = p.column("name").combine_chunks()
    lengths = np.diff(np.asarray(names.offsets))
    if len(lengths) and (lengths != schema.VECTOR_DIM).any() and ((lengths != 0) & (lengths != schema.VECTOR_DIM)).any():
        raise UbpError(f"{ctx.properties_path}: column 'name' must hold {schema.VECTOR_DIM} codes per sku")
    codes = np.zeros((len(lengths), schema.VECTOR_DIM), np.uint8)
    full = lengths == schema.VECTOR_DIM
    codes[full] = np.asarray(names.flatten()).reshape(-1, schema.VECTOR_DIM)
    price = np.clip(p.column("price").to_numpy(), 0, PRICES - 1)
    return p.column("sku").to_numpy().astype(np.int64), codes, p.column("cat").to_numpy().astype(np.int64), price


def load_graph(ctx: EmbedContext, cfg: Config) -> Graph:
    n_rel = len(ctx.client_ids)
    parts = []
    with connect_for(ctx.feature_settings, threads=cfg.duckdb_threads) as con:
        G.fit_clients(con, ctx, None, cfg.seed)  # the relevant clients only: their vectors are the profile
        skus, name, category, price = _properties(con, ctx, cfg.max_categories)
        touched = np.zeros(len(skus), np.int64)
        for r, relation in enumerate(cfg.relations):
            if relation == schema.PAGE_VISIT:
                urls = G.pairs(con, ctx, "url", {relation: 1.0}, cfg.min_clients, cfg.max_urls, n_rel)
                parts.append((urls.rows, len(skus) + urls.cols, r))
                continue
            own = G.pairs(con, ctx, "sku", {relation: 1.0}, 1, None, n_rel)
            index = np.searchsorted(skus, own.items)  # every sku of an event is in product_properties (SPEC §2)
            if len(own.items) and not np.array_equal(skus[np.minimum(index, len(skus) - 1)], own.items):
                raise UbpError(f"{ctx.events(relation)}: skus missing from {ctx.properties_path}")
            parts.append((own.rows, index[own.cols], r))
            np.add.at(touched, index, np.bincount(own.cols, minlength=len(own.items)))
    n_urls = len(urls.items) if schema.PAGE_VISIT in cfg.relations else 0
    order = np.argsort(-touched, kind="stable")  # most touched first, then sku order
    keep = order[: cfg.max_skus][touched[order[: cfg.max_skus]] >= cfg.min_clients]
    slot = np.zeros(len(skus), np.int64)
    slot[keep] = np.arange(1, len(keep) + 1)
    cat = lambda i: np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64)  # noqa: E731
    relation = np.concatenate([np.full(len(p[0]), p[2], np.int64) for p in parts]) if parts else np.zeros(0, np.int64)
    return Graph(cat(0).astype(np.int64), cat(1).astype(np.int64), relation, n_rel, slot, name, category, price,
                 int(n_urls))


# ---------------------------------------------------------------------------------------------
# The model.

class TwHIN(nn.Module):
    def __init__(self, graph: Graph, cfg: Config):
        super().__init__()
        dim = cfg.hidden
        self.graph = graph
        self.clients = nn.Embedding(graph.n_clients, dim, sparse=True)
        self.sku_ids = nn.Embedding(int(graph.sku_slot.max(initial=0)) + 1, dim, padding_idx=0, sparse=True)
        self.urls = nn.Embedding(max(graph.n_urls, 1), dim, sparse=True)
        self.name = nn.Embedding(NAME_CODES, dim)
        self.category = nn.Embedding(int(graph.category.max(initial=0)) + 1, dim)
        self.price = nn.Embedding(PRICES, dim)
        self.encoder = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.relations = nn.Parameter(0.1 * torch.randn(len(cfg.relations), dim))
        for table in (self.clients, self.urls, self.sku_ids, self.name, self.category, self.price):
            nn.init.normal_(table.weight, std=0.1)
        with torch.no_grad():
            self.sku_ids.weight[0].zero_()
        self.temperature = float(cfg.temperature)
        self.positions = torch.arange(schema.VECTOR_DIM) * 256
        self.sku_tensors = (torch.from_numpy(graph.sku_slot), torch.from_numpy(graph.name),
                            torch.from_numpy(graph.category), torch.from_numpy(graph.price))

    def items(self, item: torch.Tensor) -> torch.Tensor:
        """Vectors of items (SKU rows first, then URLs)."""
        n_skus = self.graph.n_skus
        out = torch.empty(len(item), self.clients.embedding_dim)
        is_sku = item < n_skus
        sku = item[is_sku]
        slot, name, category, price = (t[sku] for t in self.sku_tensors)
        attributes = self.name(name.long() + self.positions).mean(1) + self.category(category) + self.price(price)
        out[is_sku] = self.sku_ids(slot) + self.encoder(attributes)
        out[~is_sku] = self.urls(item[~is_sku] - n_skus)
        return out

    def targets(self, item: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.items(item) + self.relations[relation], dim=1)

    def logits(self, client: torch.Tensor, item: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        """(B, B): client i against edge j's target."""
        return F.normalize(self.clients(client), dim=1) @ self.targets(item, relation).T / self.temperature


def in_batch_loss(model: TwHIN, client: torch.Tensor, item: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
    logits = model.logits(client, item, relation)
    negative = (client[:, None] != client[None, :]) & (item[:, None] != item[None, :])
    positive = F.softplus(-logits.diagonal())
    negatives = (F.softplus(logits) * negative).sum(1) / negative.sum(1).clamp(min=1)
    return (positive + negatives).mean()


def train(graph: Graph, cfg: Config, info: dict) -> tuple[TwHIN, np.ndarray]:
    """The fitted model and the boolean mask of the edges it was trained on."""
    rng = T.seed_everything(cfg.seed)
    model = TwHIN(graph, cfg)
    fitted = T.fit_sample(graph.n_clients, cfg.fit_clients, cfg.seed)
    candidates = np.arange(len(graph.client)) if fitted is None else np.flatnonzero(np.isin(graph.client, fitted))
    train_rows, val_rows = T.holdout_split(len(candidates), cfg.val_fraction, cfg.seed)
    train_edges, val_edges = candidates[train_rows], candidates[val_rows]
    sparse = [model.clients.weight, model.sku_ids.weight, model.urls.weight]
    dense = [p for p in model.parameters() if all(p is not s for s in sparse)]
    optimizers = [torch.optim.SparseAdam(sparse, lr=cfg.embedding_lr), T.optimizer(dense, cfg.lr, weight_decay=0.01)]
    tensors = [torch.from_numpy(a) for a in (graph.client, graph.item, graph.relation)]

    def loss_of(edges: np.ndarray) -> torch.Tensor:
        idx = torch.from_numpy(edges)
        return in_batch_loss(model, *(t[idx] for t in tensors))

    def train_epoch(epoch: int) -> float:
        edges = train_edges
        if cfg.edges_per_epoch is not None and cfg.edges_per_epoch < len(edges):
            edges = np.sort(rng.choice(edges, size=cfg.edges_per_epoch, replace=False))
        total, count = 0.0, 0
        for batch in T.batches(edges, cfg.batch_size, rng):
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss = loss_of(batch)
            loss.backward()
            for opt in optimizers:
                opt.step()
            total, count = total + float(loss.detach()) * len(batch), count + len(batch)
        return total / max(count, 1)

    val_loss = None
    if len(val_edges) >= 2:
        val_parts = T.batches(val_edges, cfg.batch_size)

        def val_loss(epoch: int) -> float:
            return T.run_batches(loss_of, val_parts)

    info.update(edges=int(len(graph.client)), train_edges=int(len(train_edges)), val_edges=int(len(val_edges)),
                id_skus=int(graph.sku_slot.max(initial=0)), urls=int(graph.n_urls))
    T.fit(model, train_epoch, val_loss, cfg.epochs, cfg.patience, info, desc="twhin")
    trained = np.zeros(len(graph.client), bool)
    trained[train_edges] = True
    return model, trained


@torch.no_grad()
def client_vectors(model: TwHIN, graph: Graph, trained: np.ndarray, batch: int = 65_536) -> np.ndarray:
    """norm(u) of the clients with trained edges; the normalised mean target of the others' edges; else 0."""
    dim = model.clients.embedding_dim
    learned = np.zeros(graph.n_clients, bool)
    learned[graph.client[trained]] = True
    out = torch.zeros(graph.n_clients, dim)
    out[torch.from_numpy(learned)] = F.normalize(model.clients.weight[torch.from_numpy(learned)], dim=1)
    rest = np.flatnonzero(~learned[graph.client])
    for start in range(0, len(rest), batch):
        e = torch.from_numpy(rest[start:start + batch])
        targets = model.targets(torch.from_numpy(graph.item)[e], torch.from_numpy(graph.relation)[e])
        out.index_add_(0, torch.from_numpy(graph.client)[e], targets)
    inferred = torch.from_numpy(~learned)
    out[inferred] = F.normalize(out[inferred], dim=1)
    return out.numpy()


@contextlib.contextmanager
def deterministic_kernels():
    """torch's deterministic CPU kernels: with two threads, the sparse and scattered gradients of the
    tables otherwise sum their duplicate rows in a varying order (last bits differ run to run)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    if T.resolve_device(cfg.device).type != "cpu":  # SparseAdam's tables and the item gathers stay on the CPU
        log.warning("twhin: runs on the CPU (asked for %s)", cfg.device)
    with T.deterministic(cfg.threads), deterministic_kernels():
        graph = load_graph(ctx, cfg)
        model, trained = train(graph, cfg, ctx.info)
        model.eval()
        return client_vectors(model, graph, trained)
