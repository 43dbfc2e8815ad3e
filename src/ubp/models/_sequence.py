"""What every sequence model shares (SPEC §9.6–9.8): the event embedding, batches of padded sequences,
and the choice of fields a variant uses.

An event's vector is the sum of one learned embedding per field it uses (`EventEmbedding`); the 16
name/query codes, when used, share one table with an offset per position. Sequences come from
`ubp.sequences` (left-aligned, id 0 = padding in every field), so a batch is cut to its longest
sequence and a model reads the last real event at `lengths - 1`. Tokens may be the stage's
memory-mapped file: every batch gathers only its own rows (`last_events`), never the whole array.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ubp.io import UbpError
from ubp.sequences import CODE_FIELDS, FIELDS, PAD, Sequences, load_or_build

# Named field sets a profile can pick with `fields:` in params.yaml (or give a list of field names).
FIELD_SETS = {
    "all": ("event_type", "category", "price", "sku", "url", "gap"),
    "week_all": ("event_type", "category", "price", "sku", "url", "week", "gap"),
    "day_event_type": ("event_type", "day"),
    "all_codes": ("event_type", "category", "price", "sku", "url", "week", "gap") + CODE_FIELDS,
}


def resolve_fields(spec) -> tuple[str, ...]:
    """A FIELD_SETS name or a list of field names -> the fields, checked."""
    fields = FIELD_SETS.get(spec) if isinstance(spec, str) else tuple(spec or ())
    if not fields:
        raise UbpError(f"params.yaml: fields must be one of {sorted(FIELD_SETS)} or a list of {list(FIELDS)}, got {spec!r}")
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise UbpError(f"params.yaml: unknown sequence fields {unknown} (have {list(FIELDS)})")
    return tuple(fields)


def load(ctx) -> Sequences:
    """The sequences of ctx.client_ids as of ctx.cutoff (rows in ctx.client_ids order)."""
    seqs = load_or_build(ctx)
    if not np.array_equal(seqs.client_ids, np.asarray(ctx.client_ids, dtype=np.int64)):
        raise UbpError("sequences: client order differs from the profile's clients")
    return seqs


class EventEmbedding(nn.Module):
    """Sum of per-field embeddings of each event; PAD rows embed to exactly zero."""

    def __init__(self, sizes: dict, fields: tuple[str, ...], dim: int):
        super().__init__()
        self.fields = tuple(f for f in fields if f not in CODE_FIELDS)
        self.codes = tuple(f for f in fields if f in CODE_FIELDS)
        self.columns = [FIELDS.index(f) for f in self.fields]
        self.code_columns = [FIELDS.index(f) for f in self.codes]
        self.tables = nn.ModuleDict({f: nn.Embedding(int(sizes[f]), dim, padding_idx=PAD) for f in self.fields})
        if self.codes:
            width = int(sizes[self.codes[0]])
            self.register_buffer("code_offsets", torch.arange(len(self.codes)) * width, persistent=False)
            self.code_table = nn.Embedding(width * len(self.codes), dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (batch, time, len(FIELDS)) long -> (batch, time, dim)."""
        out = sum(self.tables[f](tokens[..., c]) for f, c in zip(self.fields, self.columns))
        if self.codes:
            codes = tokens[..., self.code_columns]
            vectors = self.code_table(codes + self.code_offsets).sum(dim=-2)
            out = out + vectors * (codes[..., :1] != PAD)  # padding stays zero
        return out


def batch_tokens(seqs: Sequences, idx: np.ndarray, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, lengths) of the rows `idx`, cut to the longest sequence among them (at least 1 step)."""
    lengths = np.asarray(seqs.lengths[idx], dtype=np.int64)
    width = max(1, int(lengths.max(initial=0)))
    tokens = np.asarray(seqs.tokens[idx, :width], dtype=np.int64)
    return torch.from_numpy(tokens).to(device), torch.from_numpy(lengths).to(device)


def last_events(tokens: np.ndarray, lengths: np.ndarray, idx: np.ndarray, context: int,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(int64 tokens, lengths) of up to `context` consecutive events of the rows idx, left-aligned and
    cut to the longest: each row's last events, or with rng a random window of a longer history.
    Gathers only those cells, so `tokens` can be a memory map of every client's sequence."""
    idx = np.asarray(idx)
    lengths = np.asarray(lengths[idx], dtype=np.int64)
    ends = lengths.copy()
    if rng is not None:  # a window end drawn uniformly among those that give a full window
        extra = np.maximum(lengths - context, 0)
        ends = lengths - np.floor(rng.random(len(idx)) * (extra + 1)).astype(np.int64)
    starts = np.maximum(ends - context, 0)
    kept = ends - starts
    width = max(1, int(kept.max(initial=0)))
    pos = starts[:, None] + np.arange(width)[None]
    real = pos < ends[:, None]
    out = np.asarray(tokens[idx[:, None], np.minimum(pos, tokens.shape[1] - 1)], dtype=np.int64)
    return out * real[..., None], kept


def last_step(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """states (batch, time, dim) at each row's last real event; a zero vector for an empty sequence."""
    index = (lengths - 1).clamp(min=0)
    picked = states[torch.arange(len(states), device=states.device), index]
    return picked * (lengths > 0).unsqueeze(1).to(picked.dtype)
