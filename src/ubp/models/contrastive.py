"""Contrastive two-tower transformer (SPEC §9.8, seed 002, the 1st-place "Contrastive Learning Transformer").

A training example is one client cut at a split date D = cutoff − `shift` days (shift drawn each
epoch from `shifts`, 0/7/14 by default: data augmentation). The *later window* is the client's
events in the `window_days` (14, like the target windows) before D; the *earlier history* is every
event before D − window_days, of which the input tower reads the last `input_len`.

* Input tower: `_sequence.EventEmbedding` (fields `input_fields`) + learned positions counted back
  from the most recent event + a CLS token + a pre-norm `nn.TransformerEncoder` (`layers` layers,
  width `hidden`), pooled as the masked mean over the CLS token and the real events, then LayerNorm.
  That pooled vector is the profile.
* Target tower (lighter, and different as the seed says): its own EventEmbedding (`target_fields`,
  no positions: the window is treated as a set), `target_layers` transformer layers over its last
  `target_len` events, masked mean + LayerNorm.
* Loss = symmetric NT-Xent (`_training.info_nce`, in-batch negatives, `temperature`) between the
  two towers' projections (one Linear → GELU → Linear head per tower, SimCLR-style, so the profile
  is the representation *before* the projection) + `lambda_bce` · BCE of a linear head on the
  profile that predicts what happens in the later window.

Where the seed is silent, we decided:
* BCE labels (multilabel, because the downstream tasks are exactly "what does the client do in the
  next 14 days"): each of the 5 event types occurs in the window (buy → churn/conversion, cart,
  remove, visit, search); bought-or-carted one of the `top_categories` most frequent categories
  (category propensity); bought-or-carted a product in each of `price_bins` price ranges (price
  propensity). Labels come from the whole window, not only the `target_len` events the tower reads.
* A client whose later window is empty (≈40% per split) has nothing for the target tower: it is
  left out of the NT-Xent term (an "empty" embedding shared by many rows would be a false negative
  for all of them) but kept in the BCE term with every label 0 — "does nothing in the next two
  weeks" is exactly the churn signal. A client with no earlier history is likewise left out of
  NT-Xent (its input is only the CLS token) and kept for BCE.
* Time fields are re-expressed relative to the point the input tower stands at: for training, the
  earlier history's `day`/`week` count days back from D − window_days (the window's from D), so at
  inference — whole history, relative to the cutoff — the tower sees the same kind of input.
* The sequences stage keeps only each client's last `max_len` events, so for a truncated client a
  window can reach before its oldest kept event and would look emptier than it was. A (client,
  shift) pair is used only when the client is not truncated or still has earlier history before
  that window; a client with no such shift is only embedded, not trained on.
* The seed weights the loss by whether a client is in the evaluation set; all our clients are, so
  we do not. Optimizer AdamW (the seed uses RAdamScheduleFree, not in our requirements).
* Validation: held-out clients at shift 0 (or their first usable shift), fixed batches.

Sized for 2 CPU cores (the embed stage within ~3 min on the default 12,000 clients): width `hidden`
(model.hidden, 128; at 256 an epoch costs ~3x), 2 input layers with feed-forward 2 x width, 1 target
layer, input_len 64, target_len 32, no dropout (its random masks cost ~25% of a CPU step), 5 epochs
(params.yaml). Measured on one core: ~45 s CPU per epoch (~235 clients/s), ~1.7 GB peak memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ubp import schema
from ubp.io import UbpError
from ubp.models import _sequence as S
from ubp.models import _training as T
from ubp.models.base import EmbedContext
from ubp.sequences import FIELDS, FIRST_VALUE, PAD, Sequences

READS = ("sequences",)


@dataclass(frozen=True)
class Config(T.TrainingConfig):
    # hidden (model.hidden): tower width = the profile's dimension
    layers: int = 2
    target_layers: int = 1
    heads: int = 4
    ff_mult: int = 2  # feed-forward width = ff_mult * hidden (torch's default 2048 is too slow here)
    dropout: float = 0.0  # its random masks cost ~25% of a CPU step; early stopping guards instead
    input_fields: str | tuple[str, ...] = "week_all"
    target_fields: str | tuple[str, ...] = "all"
    input_len: int = 64
    target_len: int = 32
    window_days: int = 14
    shifts: tuple[int, ...] = (0, 7, 14)
    projection: int = 128
    temperature: float = 0.1
    lambda_bce: float = 1.0
    top_categories: int = 20
    price_bins: int = 10
    weight_decay: float = 0.01

    def __post_init__(self):
        super().__post_init__()
        S.resolve_fields(self.input_fields)
        S.resolve_fields(self.target_fields)
        if self.hidden % self.heads:
            raise UbpError(f"contrastive: hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if not self.shifts or min(self.shifts) < 0 or self.window_days <= 0:
            raise UbpError(f"contrastive: shifts must be >= 0 and window_days > 0, got {list(self.shifts)}, "
                           f"{self.window_days}")


DAY, WEEK = FIELDS.index("day"), FIELDS.index("week")
EVENT_TYPE, CATEGORY, PRICE = FIELDS.index("event_type"), FIELDS.index("category"), FIELDS.index("price")
BUY, CART = schema.EVENT_TYPES.index(schema.PRODUCT_BUY) + 1, schema.EVENT_TYPES.index(schema.ADD_TO_CART) + 1


# ---------------------------------------------------------------------------------------------
# Windows: plain numpy on the token arrays, so they can be checked by hand.

def window_bounds(days: np.ndarray, shift, window_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Where a client's sequence splits for split date D = cutoff − shift days.

    days: (clients, time) `day` ids (0 = PAD, else whole days before the cutoff + 1), events in
    chronological order, so ages never increase along a row. Returns (early_end, late_end): the
    earlier history is positions [0, early_end) — events at least shift + window_days whole days
    before the cutoff, i.e. before D − window_days — and the later window is [early_end, late_end),
    events with shift <= age < shift + window_days (the last window_days days before D). Events at
    or after D (age < shift) come after late_end and are used by neither.
    """
    days = np.asarray(days, dtype=np.int64)
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), days.shape[:1])[:, None]
    age, real = days - 1, days > PAD
    early_end = (real & (age >= shift + window_days)).sum(axis=1)
    late_end = (real & (age >= shift)).sum(axis=1)
    return early_end, late_end


def usable_shifts(days: np.ndarray, lengths: np.ndarray, max_len: int, shifts, window_days: int) -> np.ndarray:
    """(clients, len(shifts)) bool: the window at that shift is complete — the client's sequence was
    not truncated, or it still has earlier history before the window."""
    cols = []
    for shift in shifts:
        early_end, _ = window_bounds(days, int(shift), window_days)
        cols.append((np.asarray(lengths) < max_len) | (early_end > 0))
    return np.stack(cols, axis=1)


def slice_tokens(tokens: np.ndarray, rows: np.ndarray, start: np.ndarray, end: np.ndarray, keep: int,
                 offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The last `keep` events of positions [start, end) of each row, left-aligned and PAD-filled, with
    `day`/`week` counted from `offset` days before the cutoff (day − offset, at least 1)."""
    start = np.maximum(np.asarray(start, dtype=np.int64), np.asarray(end, dtype=np.int64) - keep)
    lengths = np.maximum(np.asarray(end, dtype=np.int64) - start, 0)
    width = max(1, int(lengths.max(initial=0)))
    pos = start[:, None] + np.arange(width)
    real = np.arange(width) < lengths[:, None]
    out = np.asarray(tokens[np.asarray(rows)[:, None], np.where(real, pos, 0)], dtype=np.int64)
    out[~real] = PAD
    day = np.maximum(out[..., DAY] - np.asarray(offset, dtype=np.int64)[:, None], 1)
    out[..., DAY] = np.where(real, day, PAD)
    out[..., WEEK] = np.where(real, (day - 1) // 7 + 1, PAD)
    return out, lengths


def window_labels(tokens: np.ndarray, rows: np.ndarray, start: np.ndarray, end: np.ndarray,
                  top_categories: int, price_bins: int, n_prices: int) -> np.ndarray:
    """Multilabel targets of the windows [start, end): event types present, top categories and price
    ranges bought or carted (float32, all 0 for an empty window)."""
    pos = np.arange(tokens.shape[1])
    inside = (pos >= np.asarray(start)[:, None]) & (pos < np.asarray(end)[:, None])
    block = np.asarray(tokens[np.asarray(rows)], dtype=np.int64)
    etype = np.where(inside, block[..., EVENT_TYPE], PAD)
    labels = [(etype == t).any(axis=1) for t in range(1, len(schema.EVENT_TYPES) + 1)]
    shopped = (etype == BUY) | (etype == CART)
    category = np.where(shopped, block[..., CATEGORY], PAD)
    labels += [(category == FIRST_VALUE + c).any(axis=1) for c in range(top_categories)]
    price = np.where(shopped & (block[..., PRICE] > 1), block[..., PRICE] - 2, -1)  # bucket, -1 none
    edges = np.linspace(0, n_prices, price_bins + 1) if price_bins else []
    labels += [((price >= lo) & (price < hi)).any(axis=1) for lo, hi in zip(edges[:-1], edges[1:])]
    return np.stack(labels, axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The towers.

class Tower(nn.Module):
    """Events -> one vector: EventEmbedding (+ positions from the end), CLS, transformer, masked mean, LayerNorm."""

    def __init__(self, sizes: dict, fields: tuple[str, ...], dim: int, layers: int, heads: int, ff: int,
                 dropout: float, max_len: int, positions: bool):
        super().__init__()
        self.embed = S.EventEmbedding(sizes, fields, dim)
        self.positions = nn.Embedding(max_len, dim) if positions else None
        self.cls = nn.Parameter(0.02 * torch.randn(dim))
        layer = nn.TransformerEncoderLayer(dim, heads, ff, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        steps = torch.arange(x.shape[1], device=x.device)
        real = steps[None] < lengths[:, None]
        if self.positions is not None:  # 0 = the most recent event: recency, whatever the length
            back = (lengths[:, None] - 1 - steps[None]).clamp(0, self.positions.num_embeddings - 1)
            x = x + self.positions(back) * real.unsqueeze(-1)
        x = torch.cat([self.cls.expand(len(x), 1, -1), x], dim=1)
        keep = torch.cat([torch.ones_like(real[:, :1]), real], dim=1)
        h = self.encoder(x, src_key_padding_mask=~keep)
        pooled = (h * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True)
        return self.norm(pooled)


def projection(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out))


class TwoTower(nn.Module):
    def __init__(self, sizes: dict, cfg: Config, n_labels: int):
        super().__init__()
        dim, ff = cfg.hidden, cfg.ff_mult * cfg.hidden
        self.input_tower = Tower(sizes, S.resolve_fields(cfg.input_fields), dim, cfg.layers, cfg.heads, ff,
                                 cfg.dropout, cfg.input_len, positions=True)
        self.target_tower = Tower(sizes, S.resolve_fields(cfg.target_fields), dim, cfg.target_layers, cfg.heads, ff,
                                  cfg.dropout, cfg.target_len, positions=False)
        self.input_proj = projection(dim, cfg.projection)
        self.target_proj = projection(dim, cfg.projection)
        self.head = nn.Linear(dim, n_labels)

    def profile(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.input_tower(tokens, lengths)


# ---------------------------------------------------------------------------------------------
# Training.

class Examples:
    """Builds the tensors of a batch of (client row, shift) pairs from the sequences."""

    def __init__(self, seqs: Sequences, cfg: Config, device: torch.device):
        self.tokens = seqs.tokens  # may be memory-mapped: a batch gathers only its rows
        self.days = self.tokens[..., DAY]  # a view, not a copy
        self.max_len = int(seqs.max_len)
        self.lengths = np.asarray(seqs.lengths, dtype=np.int64)
        self.cfg, self.device = cfg, device
        self.n_prices = int(seqs.sizes["price"]) - 2
        self.top_categories = min(cfg.top_categories, max(int(seqs.sizes["category"]) - FIRST_VALUE, 0))
        self.n_labels = len(schema.EVENT_TYPES) + self.top_categories + cfg.price_bins

    def batch(self, rows: np.ndarray, shifts: np.ndarray) -> dict:
        cfg, w = self.cfg, self.cfg.window_days
        early_end, late_end = window_bounds(self.days[rows], shifts, w)
        zero = np.zeros_like(early_end)
        early, early_len = slice_tokens(self.tokens, rows, zero, early_end, cfg.input_len, shifts + w)
        late, late_len = slice_tokens(self.tokens, rows, early_end, late_end, cfg.target_len, shifts)
        labels = window_labels(self.tokens, rows, early_end, late_end, self.top_categories,
                               cfg.price_bins, self.n_prices)
        as_t = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
        return {"early": as_t(early), "early_len": as_t(early_len), "late": as_t(late), "late_len": as_t(late_len),
                "labels": as_t(labels), "pair": as_t((early_len > 0) & (late_len > 0))}


def loss_terms(model: TwoTower, b: dict, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(NT-Xent over the rows with both parts, BCE over all rows); NT-Xent is 0 with under 2 pairs."""
    h = model.input_tower(b["early"], b["early_len"])
    bce = nn.functional.binary_cross_entropy_with_logits(model.head(h), b["labels"])
    pair = b["pair"]
    if int(pair.sum()) < 2:
        return h.sum() * 0.0, bce
    g = model.target_tower(b["late"][pair], b["late_len"][pair])
    nce = T.info_nce(model.input_proj(h[pair]), model.target_proj(g), cfg.temperature)
    return nce, bce


def retrieval_accuracy(model: TwoTower, b: dict, k: int = 1) -> float:
    """Share of paired rows whose own later window is among the k most similar of the batch's windows."""
    with torch.no_grad():
        pair = b["pair"]
        a = nn.functional.normalize(model.input_proj(model.input_tower(b["early"][pair], b["early_len"][pair])), dim=1)
        g = nn.functional.normalize(model.target_proj(model.target_tower(b["late"][pair], b["late_len"][pair])), dim=1)
        sim = a @ g.T
        rank = (sim > sim.diagonal()[:, None]).sum(1)  # windows closer than the client's own
        return float((rank < k).float().mean())


def fitted_usable(data: "Examples", rows: np.ndarray, shifts: np.ndarray, window_days: int,
                  chunk: int = 65_536) -> np.ndarray:
    """usable_shifts of the rows, a chunk at a time (the whole day column as int64 would be ~1 GB at 1M clients)."""
    out = np.zeros((len(rows), len(shifts)), dtype=bool)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        out[start:start + chunk] = usable_shifts(data.days[part], data.lengths[part], data.max_len, shifts, window_days)
    return out


def first_usable(usable: np.ndarray) -> np.ndarray:
    return np.argmax(usable, axis=1)


def train(seqs: Sequences, cfg: Config, info: dict, device: torch.device) -> tuple[TwoTower, Examples]:
    rng = T.seed_everything(cfg.seed)
    data = Examples(seqs, cfg, device)
    shifts = np.asarray(cfg.shifts, dtype=np.int64)
    if shifts.max() + cfg.window_days > int(seqs.sizes["day"]) - 2:
        raise UbpError(f"contrastive: the oldest window ({shifts.max()} + {cfg.window_days} days) reaches past "
                       f"sequences.max_days ({int(seqs.sizes['day']) - 2})")
    train_idx, val_idx = T.fit_split(len(seqs.lengths), cfg, info)
    fitted = np.concatenate([train_idx, val_idx])
    usable = np.zeros((len(seqs.lengths), len(shifts)), dtype=bool)  # only the fitted rows' are computed
    usable[fitted] = fitted_usable(data, fitted, shifts, cfg.window_days)
    train_idx, val_idx = train_idx[usable[train_idx].any(1)], val_idx[usable[val_idx].any(1)]
    model = TwoTower(seqs.sizes, cfg, data.n_labels).to(device)
    optimizer = T.optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    lam, batch_size = cfg.lambda_bce, cfg.batch_size

    def step(rows: np.ndarray, shift: np.ndarray) -> torch.Tensor:
        nce, bce = loss_terms(model, data.batch(rows, shift), cfg)
        return nce + lam * bce

    def train_epoch(epoch: int) -> float:
        # One usable shift per client per epoch, drawn uniformly: each epoch sees other windows.
        pick = np.array([rng.choice(np.flatnonzero(u)) for u in usable[train_idx]], dtype=np.int64)
        shift_of = dict(zip(train_idx.tolist(), shifts[pick].tolist()))
        run = lambda idx: step(idx, np.array([shift_of[i] for i in idx.tolist()], dtype=np.int64))  # noqa: E731
        return T.run_batches(run, T.batches(train_idx, batch_size, rng), optimizer)

    val_loss = None
    if len(val_idx):
        val_shift = shifts[first_usable(usable[val_idx])]
        val_parts = T.batches(np.arange(len(val_idx)), batch_size)

        def val_loss(epoch: int) -> float:
            return T.run_batches(lambda i: step(val_idx[i], val_shift[i]), val_parts)

    info.update(n_train=int(len(train_idx)), n_val=int(len(val_idx)), n_labels=int(data.n_labels),
                untrained_clients=int((~usable[fitted].any(1)).sum()))
    T.fit(model, train_epoch, val_loss, cfg.epochs, cfg.patience, info, desc="contrastive")
    if len(val_idx):  # the best model's terms on the held-out clients, for meta.json
        with torch.no_grad():  # one batch at a time: all held-out batches at once would not fit at scale
            terms = np.array([[float(x) for x in loss_terms(model, b, cfg)] + [retrieval_accuracy(model, b)]
                              for b in (data.batch(val_idx[i], val_shift[i]) for i in val_parts)])
        weights = np.array([len(i) for i in val_parts], dtype=np.float64)
        nce, bce, top1 = (weights @ terms) / weights.sum()
        info.update(val_nt_xent=round(float(nce), 4), val_bce=round(float(bce), 4), val_top1=round(float(top1), 4))
    return model, data


def encode(model: TwoTower, data: Examples, rows: np.ndarray, cfg: Config, device: torch.device) -> np.ndarray:
    """Profiles: the input tower over each client's whole history (its last input_len events)."""
    def profile(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.cpu().numpy()
        lengths = data.lengths[idx]
        tokens, lengths = slice_tokens(data.tokens, idx, np.zeros_like(lengths), lengths, cfg.input_len,
                                       np.zeros_like(lengths))
        return model.profile(torch.from_numpy(tokens).to(device), torch.from_numpy(lengths).to(device))

    if not len(rows):
        return np.zeros((0, cfg.hidden), np.float32)
    return T.predict(profile, np.asarray(rows), cfg.batch_size * 2, device)


def embed(ctx: EmbedContext, cfg: Config) -> np.ndarray:
    device = T.resolve_device(cfg.device)
    with T.deterministic(cfg.threads):
        seqs = S.load(ctx)
        model, data = train(seqs, cfg, ctx.info, device)
        return encode(model, data, np.arange(len(seqs.lengths)), cfg, device)
