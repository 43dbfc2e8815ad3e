"""Next-event transformer (SPEC §9.7; seed 001 §3.2.3 "next event prediction", seed 003 "sequential encoder").

A GPT-2-style causal transformer reads the client's chronological event sequence (`ubp.sequences`)
and, at every step, predicts the NEXT event with separate output heads (seed 003's objectives):
its type (NETP), its item — `sku` for a product event (NIP), `url` for a page visit (NUP) —, its
category and price bucket, and its time gap bucket (TDP). Loss = the sum over heads of each head's
mean cross-entropy. The profile (`pool`) is read from the last layer's hidden states (after the
final LayerNorm): `last`, the state at the client's last real event (GPT-2's last hidden state, the
state that predicts what the client does next), `mean`, the mean of the states over the client's
window (start state included), or `last_mean`, both side by side. Default `mean`: on the default
data the six-task sum was 3.92 with `last` and 4.29 with `mean` (same weights; 4.34 standardized,
see `model.standardize`) — one step's state is dominated by that step's event, the mean carries
the client's whole recent history.

Architecture (nanoGPT-like, hand-written so that it is short and deterministic on CPU): input =
`_sequence.EventEmbedding` over `fields` + learned positional embeddings; `layers` pre-LayerNorm
blocks (causal multi-head self-attention via `scaled_dot_product_attention(is_causal=True)`, then a
4x GELU MLP, each with a residual); a final LayerNorm; one linear head per predicted field.

Where the papers are silent, we decided:
* Input fields `week_all` (type, category, price, sku, url, week-to-cutoff, gap): the GRU-AE's best
  set in seed 001. `week` tells how long ago an event was — what churn needs at the last step.
* A learned start vector at position 0, before the first event: the first event is a training
  target too, and a client without events gets the start state as profile (deterministic, finite,
  the model's prior) instead of an arbitrary zero vector.
* Item heads: two (sku, url) rather than one joint head, since an event has one or the other; each
  head is computed only at the positions whose next event has that field (PAD and MISSING are not
  targets), so the 5,000-class softmaxes cost ~15% (sku) and ~75% (url) of the steps, not all.
  `item_vocab` caps their output classes to the most frequent ids (the rest -> RARE); the input
  tables keep the full vocabulary. category/price/gap heads ignore PAD and MISSING too.
* Context: the model sees a client's last `context` events (64 of the stored 128). Training draws a
  random window of `context` events per client and epoch (seeded; a long client contributes different
  parts of its history), validation and the profile use the last `context` events.
  Attention is causal and sequences are left-aligned (PAD after the real events), so a real
  step never sees padding and no padding mask is needed: a profile does not depend on its batch.
* AdamW (weight decay 0.01), no warm-up (pre-LN trains stably at lr 1e-3 here). No dropout by
  default: a few epochs do not overfit, and on CPU dropout costs ~20% of a step (its random masks,
  and attention falls back from the fused kernel to the plain one).
* Size for 2 CPU cores (the ~3-minute budget of the default data, 12,000 clients): width = model
  `hidden`, 2 layers x 4 heads, context 64, item heads capped at 2,000 classes, epochs set in
  params.yaml. The seed's "next product" model was 4 x 4 x 128.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ubp.io import UbpError
from ubp.models import _sequence as Q
from ubp.models import _training as T
from ubp.models.base import EmbedContext
from ubp.sequences import FIELDS, FIRST_VALUE, MISSING, PAD, RARE, Sequences

TARGETS = ("event_type", "sku", "url", "category", "price", "gap")
POOLS = ("last", "mean", "last_mean")
ITEM_FIELDS = ("sku", "url")
READS = ("sequences",)


@dataclass(frozen=True)
class Config(T.TrainingConfig):
    # hidden (model.hidden): the width
    layers: int = 2
    heads: int = 4
    context: int = 64  # events per window (the stored sequences keep up to 128)
    fields: str | tuple[str, ...] = "week_all"
    targets: tuple[str, ...] = TARGETS
    item_vocab: int = 1000  # output classes of the sku/url heads beyond the special ids (~80% of events)
    dropout: float = 0.0
    weight_decay: float = 0.01
    random_windows: bool = True
    pool: Literal["last", "mean", "last_mean"] = "mean"  # the profile: "last" state, "mean" of the states, or both
    infer_batch_size: int = 512

    def __post_init__(self):
        super().__post_init__()
        Q.resolve_fields(self.fields)
        bad = [t for t in self.targets if t not in TARGETS]
        if not self.targets or bad:
            raise UbpError(f"params.yaml: next_event targets must be a non-empty list of {list(TARGETS)}, "
                           f"got {list(self.targets)!r}")
        for key in ("layers", "heads", "context", "item_vocab", "infer_batch_size"):
            if getattr(self, key) <= 0:
                raise UbpError(f"params.yaml: next_event {key} must be a positive integer, got {getattr(self, key)!r}")
        if self.hidden % self.heads:
            raise UbpError(f"params.yaml: next_event hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if not 0 <= self.dropout < 1:
            raise UbpError(f"params.yaml: next_event dropout must be in [0, 1), got {self.dropout!r}")


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + mlp(LN(x)); attention is causal."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, t, d)))
        return x + self.mlp(self.ln2(x))


class NextEventModel(nn.Module):
    def __init__(self, sizes: dict, fields: tuple[str, ...], targets: tuple[str, ...], dim: int, layers: int,
                 heads: int, context: int, item_vocab: int, dropout: float):
        super().__init__()
        self.events = Q.EventEmbedding(sizes, fields, dim)
        self.start = nn.Parameter(torch.zeros(dim))
        self.position = nn.Embedding(context + 1, dim)  # +1: the start vector's position
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(dim, heads, dropout) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.classes = {f: head_classes(sizes, f, item_vocab) for f in targets}
        self.heads = nn.ModuleDict({f: nn.Linear(dim, n) for f, n in self.classes.items()})
        self.columns = {f: FIELDS.index(f) for f in targets}
        self.item_vocab = int(item_vocab)
        self.apply(_init)

    def states(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, time, fields), left-aligned -> hidden states (batch, 1 + time, dim);
        position 0 is the start vector, position i the state after the i-th event."""
        x = self.events(tokens)
        x = torch.cat([self.start.expand(len(x), 1, -1), x], dim=1)
        x = self.drop(x + self.position.weight[: x.shape[1]])
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        """Sum over heads of the mean cross-entropy of the next event's field; the state at
        position i (after i events) predicts event i, so the last state has no target here."""
        h = self.states(tokens)[:, :-1]
        total = h.new_zeros(())
        for field, head in self.heads.items():
            target, valid = next_targets(tokens[..., self.columns[field]], field, self.item_vocab)
            if bool(valid.any()):  # only the steps that have this field: the big softmaxes stay small
                total = total + F.cross_entropy(head(h[valid]), target[valid])
        return total


def _init(module: nn.Module) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases (the PAD rows stay zero)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


def head_classes(sizes: dict, field: str, item_vocab: int) -> int:
    if field in ITEM_FIELDS:
        return min(int(sizes[field]), FIRST_VALUE + int(item_vocab))
    return int(sizes[field])


def next_targets(column: torch.Tensor, field: str, item_vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(target ids, mask of steps that are targets) of one field: event_type wherever there is an
    event; the other fields only where they apply (not PAD, not MISSING); item ids beyond the
    `item_vocab` most frequent become RARE."""
    valid = column > (PAD if field == "event_type" else MISSING)
    if field in ITEM_FIELDS:
        column = torch.where(column >= FIRST_VALUE + int(item_vocab), torch.full_like(column, RARE), column)
    return column, valid


def windows(seqs: Sequences, idx: np.ndarray, context: int, rng: np.random.Generator | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, lengths) of up to `context` consecutive events of the rows idx (`_sequence.last_events`)."""
    return Q.last_events(seqs.tokens, seqs.lengths, idx, context, rng)


def build(seqs: Sequences, cfg: Config) -> NextEventModel:
    missing = [f for f in set(Q.resolve_fields(cfg.fields)) | set(cfg.targets) if f not in seqs.sizes]
    if missing:
        raise UbpError(f"sequences: no vocabulary size for {missing}")
    return NextEventModel(seqs.sizes, Q.resolve_fields(cfg.fields), tuple(cfg.targets), cfg.hidden, cfg.layers,
                          cfg.heads, cfg.context, cfg.item_vocab, cfg.dropout)


def train(seqs: Sequences, cfg: Config, info: dict | None = None) -> NextEventModel:
    """Fit the model on the sequences (held-out clients for early stopping); best model, eval mode."""
    info = {} if info is None else info
    rng = T.seed_everything(cfg.seed)
    device = T.resolve_device(cfg.device)
    model = build(seqs, cfg).to(device)
    optimizer = T.optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    train_idx, val_idx = T.fit_split(len(seqs.lengths), cfg, info)
    train_idx = train_idx[seqs.lengths[train_idx] > 0]  # an empty history has nothing to predict
    draws = rng if cfg.random_windows else None

    def step(idx: np.ndarray, sample: np.random.Generator | None = None) -> torch.Tensor:
        tokens, _ = windows(seqs, idx, cfg.context, sample)
        return model.loss(torch.from_numpy(tokens).to(device))

    def train_epoch(epoch: int) -> float:
        return T.run_batches(lambda idx: step(idx, draws), T.batches(train_idx, cfg.batch_size, rng), optimizer)

    val_loss = None
    if len(val_idx):
        val_parts = T.batches(val_idx[seqs.lengths[val_idx] > 0], cfg.batch_size)

        def val_loss(epoch: int) -> float:
            return T.run_batches(step, val_parts)

    n_params = sum(p.numel() for p in model.parameters())
    info.update(n_train=int(len(train_idx)), n_val=int(len(val_idx)), n_params=int(n_params),
                head_classes=dict(model.classes))
    with T.deterministic(cfg.threads):
        T.fit(model, train_epoch, val_loss, cfg.epochs, cfg.patience, info, desc="next_event")
    return model


def pool_states(states: torch.Tensor, steps: torch.Tensor, pool: str) -> torch.Tensor:
    """states (batch, time, dim) of which the first `steps` are real -> one vector per row: the last
    real state, the mean of the real states, or both side by side."""
    last = Q.last_step(states, steps)
    if pool == "last":
        return last
    real = (torch.arange(states.shape[1], device=states.device)[None] < steps[:, None]).to(states.dtype)
    mean = (states * real[..., None]).sum(dim=1) / steps[:, None].clamp(min=1).to(states.dtype)
    return mean if pool == "mean" else torch.cat([last, mean], dim=1)


def profile_rows(model: NextEventModel, seqs: Sequences, idx: np.ndarray, context: int, pool: str = "mean",
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """The profiles of rows idx from their last `context` events; the states are the start state
    and one after each event, so an empty history gets the start state."""
    tokens, kept = windows(seqs, idx, context)
    states = model.states(torch.from_numpy(tokens).to(device))
    return pool_states(states, torch.from_numpy(kept + 1).to(device), pool)  # +1: the start state


def profiles(model: NextEventModel, seqs: Sequences, context: int, batch_size: int, pool: str = "mean",
             device: torch.device | str = "cpu") -> np.ndarray:
    """profile_rows of every client, in batches (rows in seqs order)."""
    model.eval()
    rows = lambda idx: profile_rows(model, seqs, idx.cpu().numpy(), context, pool, device)
    return T.predict(rows, np.arange(len(seqs.lengths)), batch_size, device)


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    seqs = Q.load(ctx)  # tokens stay memory-mapped: each batch gathers its own rows
    with T.deterministic(cfg.threads):
        model = train(seqs, cfg, ctx.info)
        out = profiles(model, seqs, cfg.context, cfg.infer_batch_size, cfg.pool, T.resolve_device(cfg.device))
    ctx.info.update(context=cfg.context, empty_histories=int((seqs.lengths == 0).sum()))
    if not math.isfinite(float(np.abs(out).max(initial=0.0))):
        raise UbpError("next_event: the profile has NaN or inf values")
    return out
