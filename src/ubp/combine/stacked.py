"""Supervised stacking (SPEC §9.11; 1st place, seed 002): a network over the normalised source
profiles, trained with multi-task heads, whose hidden layer is the profile.

Honest supervision. The labels come from a window wholly inside the input period: with the
profile's cutoff C (the split for local evaluation), the sources are computed as of
C − `shift_days` (every source method reads only events before its context's cutoff: the shared
contract test checks it) and the labels from the `window_days` after that date, which end at or
before C. At inference the sources as of C are fed through the trained network. So no label of the
real target windows is ever read, and only the three open tasks appear as heads — churn of the
clients active before the window, and the top `n_labels` categories and SKUs bought in the window
— so that conversion, new-SKU and price propensity (the hidden tasks) measure generalisation.

A combined profile (`combined.stacked`, inheriting `model:`; `python -m ubp combine stacked`).
Network (the write-up stacks with a GELU MLP): input = the ensemble of the sources (`sources`,
`per_source`, `balance` as in `ubp.combine.ensemble`); Linear → GELU → LayerNorm → Dropout →
Linear(`dim`) = the profile; one linear head per task on the profile, plus an optional
self-supervised head that reconstructs the input (`reconstruction_weight`). Loss = BCE per head
(churn masked to active clients) + weight × MSE; AdamW; early stopping on held-out clients.

Where the write-up is silent: 14-day shift and window (the target windows' length); heads weighted
equally; the profile is the pre-activation of the last hidden layer, so the heads are linear in it.
A source whose method is not `AS_OF` (the oracle: the generator's state at the split) is refused.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from torch.nn import functional as F

from ubp import schema
from ubp.combine import ensemble
from ubp.combine.sources import SourceSettings, check_sources
from ubp.features.build import connect_for
from ubp.io import UbpError
from ubp.models import _training as T
from ubp.models.base import EmbedContext

HEADS = ("churn", "category", "sku")
READS = ("events", "properties", "embeddings")


@dataclass(frozen=True)
class Config(T.TrainingConfig):
    sources: tuple[str, ...] = ("features", "svd", "aggregated")  # base profiles, as ensemble.sources
    per_source: Mapping[str, SourceSettings] = field(default_factory=lambda: MappingProxyType({}))  # default: auto
    shift_days: int = 14
    window_days: int = 14
    n_labels: int = 100
    dim: int | None = None  # the profile width; None: `hidden`
    dropout: float = 0.1
    reconstruction_weight: float = 0.0
    weight_decay: float = 1e-4
    balance: Literal["source", "dimension", "none"] = "source"  # how the sources are balanced (ubp.combine.blocks)
    embeddings_dir: str | None = None  # where stored sources are (None: embeddings/), e.g. for tests
    params_file: str | None = None  # where the sources' settings are (None: params.yaml), e.g. for tests

    def __post_init__(self):
        super().__post_init__()
        check_sources(self.sources, self.per_source)
        if self.shift_days < self.window_days or self.window_days < 1:
            raise UbpError(f"stacked: shift_days ({self.shift_days}) must be >= window_days ({self.window_days}) "
                           ">= 1, so the label window ends before the profile's cutoff")


log = logging.getLogger("ubp.stacked")


@dataclasses.dataclass
class WindowLabels:
    active: np.ndarray  # bool (n,): bought before the window (churn's clients)
    churn: np.ndarray  # float32 (n,): 1 = no purchase in the window
    category: np.ndarray  # float32 (n, L): bought from the window's top categories
    sku: np.ndarray  # float32 (n, L): bought the window's top SKUs
    category_ids: np.ndarray
    sku_ids: np.ndarray


def window_labels(ctx: EmbedContext, start, days: int, n_labels: int) -> WindowLabels:
    """The open tasks' labels of ctx.client_ids for purchases in [start, start + days), never at or
    after ctx.cutoff. Label sets: the window's most bought categories/SKUs by all clients (ties: id)."""
    end = min(start + timedelta(days=int(days)), ctx.cutoff)
    fmt = lambda t: f"TIMESTAMP '{t.strftime(schema.TIMESTAMP_FORMAT)}'"  # noqa: E731
    buys, props = ctx.events(schema.PRODUCT_BUY), ctx.properties_path
    with connect_for(ctx.feature_settings) as con:
        con.register("clients", pa.table({"client_id": np.asarray(ctx.client_ids, np.int64),
                                          "row": np.arange(len(ctx.client_ids), dtype=np.int64)}))
        con.execute(f"CREATE TEMP VIEW window_buys AS SELECT b.client_id, b.sku, p.category "
                    f"FROM read_parquet('{buys}') b JOIN read_parquet('{props}') p USING (sku) "
                    f"WHERE b.timestamp >= {fmt(start)} AND b.timestamp < {fmt(end)}")
        top = {col: np.array([r[0] for r in con.execute(
            f"SELECT {col} FROM window_buys GROUP BY {col} ORDER BY count(*) DESC, {col} LIMIT {int(n_labels)}"
        ).fetchall()], dtype=np.int64) for col in ("category", "sku")}
        active_rows = con.execute(f"SELECT DISTINCT c.row FROM read_parquet('{buys}') b JOIN clients c USING (client_id) "
                                  f"WHERE b.timestamp < {fmt(start)}").fetchnumpy()["row"]
        pairs = con.execute("SELECT DISTINCT c.row, w.category, w.sku FROM window_buys w JOIN clients c USING (client_id)"
                            ).fetchnumpy()
    n = len(ctx.client_ids)
    active = np.zeros(n, bool)
    active[np.asarray(active_rows, np.int64)] = True
    churn = np.ones(n, np.float32)
    churn[np.asarray(pairs["row"], np.int64)] = 0.0
    matrices = {}
    for col, ids in top.items():
        m = np.zeros((n, len(ids)), np.float32)
        col_of = {int(v): j for j, v in enumerate(ids)}
        for row, value in zip(np.asarray(pairs["row"]), np.asarray(pairs[col])):
            j = col_of.get(int(value))
            if j is not None:
                m[int(row), j] = 1.0
        matrices[col] = m
    return WindowLabels(active, churn, matrices["category"], matrices["sku"], top["category"], top["sku"])


class Stacker(nn.Module):
    def __init__(self, d_in: int, hidden: int, dim: int, n_category: int, n_sku: int, dropout: float,
                 reconstruct: bool):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Dropout(dropout),
                                     nn.Linear(hidden, dim))
        self.heads = nn.ModuleDict({"churn": nn.Linear(dim, 1), "category": nn.Linear(dim, max(n_category, 1)),
                                    "sku": nn.Linear(dim, max(n_sku, 1))})
        self.decoder = nn.Linear(dim, d_in) if reconstruct else None

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def stacking_loss(model: Stacker, x: torch.Tensor, y: dict, w_rec: float) -> torch.Tensor:
    z = model.represent(x)
    active = y["active"]
    churn = F.binary_cross_entropy_with_logits(model.heads["churn"](z)[:, 0], y["churn"], reduction="none")
    loss = (churn * active).sum() / active.sum().clamp(min=1.0)
    for head in ("category", "sku"):
        if y[head].shape[1]:
            loss = loss + F.binary_cross_entropy_with_logits(model.heads[head](z), y[head])
    if model.decoder is not None and w_rec > 0:
        loss = loss + w_rec * F.mse_loss(model.decoder(z), x)
    return loss


def train(x: np.ndarray, labels: WindowLabels, cfg: Config, info: dict | None = None) -> Stacker:
    info = {} if info is None else info
    rng = T.seed_everything(cfg.seed)
    device = T.resolve_device(cfg.device)
    model = Stacker(x.shape[1], cfg.hidden, cfg.dim or cfg.hidden, labels.category.shape[1], labels.sku.shape[1],
                    cfg.dropout, cfg.reconstruction_weight > 0).to(device)
    optimizer = T.optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    train_idx, val_idx = T.holdout_split(len(x), cfg.val_fraction, cfg.seed)
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    targets = {"active": torch.from_numpy(labels.active.astype(np.float32)), "churn": torch.from_numpy(labels.churn),
               "category": torch.from_numpy(labels.category), "sku": torch.from_numpy(labels.sku)}
    targets = {k: v.to(device) for k, v in targets.items()}

    def step(idx: np.ndarray) -> torch.Tensor:
        index = torch.from_numpy(idx).to(device)
        return stacking_loss(model, data[index], {k: v[index] for k, v in targets.items()}, cfg.reconstruction_weight)

    def train_epoch(epoch: int) -> float:
        return T.run_batches(step, T.batches(train_idx, cfg.batch_size, rng), optimizer)

    val_loss = None
    if len(val_idx):
        val_parts = T.batches(val_idx, cfg.batch_size)

        def val_loss(epoch: int) -> float:
            return T.run_batches(step, val_parts)

    info.update(n_train=int(len(train_idx)), n_val=int(len(val_idx)), n_inputs=int(x.shape[1]),
                n_active=int(labels.active.sum()), window_buyers=int((labels.churn == 0).sum()),
                n_category_labels=int(labels.category.shape[1]), n_sku_labels=int(labels.sku.shape[1]))
    with T.deterministic(cfg.threads):
        T.fit(model, train_epoch, val_loss, cfg.epochs, cfg.patience, info, desc="stacked")
    return model


def source_matrix(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    """The normalised, concatenated sources for ctx (as of ctx.cutoff), float32: the ensemble of them
    with this profile's sources, per_source, balance and seed (the ensemble's defaults otherwise)."""
    sources = ensemble.Config(sources=cfg.sources, per_source=cfg.per_source, balance=cfg.balance, seed=cfg.seed,
                              embeddings_dir=cfg.embeddings_dir, params_file=cfg.params_file)
    return np.asarray(ensemble.build(dataclasses.replace(ctx, info={}), sources), dtype=np.float32)


def check_as_of(cfg: Config) -> None:
    """Every source must be computable as of an earlier date (its method's AS_OF trait)."""
    from ubp.models import traits
    from ubp.params import PARAMS_FILE, load_params, profile_method

    params = load_params(cfg.params_file or PARAMS_FILE)
    for name in cfg.sources:
        if name in (params.get("models") or {}) and not traits(profile_method(params, name)).as_of:
            raise UbpError(f"stacked: source '{name}' cannot be computed as of an earlier date "
                           f"(method {profile_method(params, name)}); remove it from the sources")


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    check_as_of(cfg)
    shifted = ctx.cutoff - timedelta(days=cfg.shift_days)
    # The stored features table is as of ctx.cutoff: the sources as of the shifted date compute
    # theirs (load_or_build would refuse the stored one).
    past = dataclasses.replace(ctx, cutoff=shifted, features_path=None, info={})
    log.info("stacked: sources as of %s (features computed for that date), labels from the %d days after",
             shifted, cfg.window_days)
    with T.deterministic(cfg.threads):
        x_past = source_matrix(past, cfg)
        labels = window_labels(ctx, shifted, cfg.window_days, cfg.n_labels)
        x_now = source_matrix(ctx, cfg)
        model = train(x_past, labels, cfg, ctx.info)
        ctx.info.update(label_window_start=shifted.strftime(schema.TIMESTAMP_FORMAT))
        return T.predict(model.represent, x_now, 4096, T.resolve_device(cfg.device))
