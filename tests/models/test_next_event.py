"""next_event: it learns to predict the next event, attention is causal, a profile does not depend
on its batch's padding, an empty history gets a finite profile, and bad settings are refused."""
import dataclasses

import numpy as np
import pytest
import torch

from ubp.config import build
from ubp.io import UbpError
from ubp.models import _sequence as Q
from ubp.models import _training as T
from ubp.models import next_event as N
from ubp.sequences import FIELDS, RARE, Sequences

SMALL = {"hidden": 32, "layers": 1, "heads": 2, "context": 32, "item_vocab": 200, "epochs": 8, "patience": 8,
         "threads": 1, "batch_size": 16, "lr": 3e-3, "seed": 0}
TYPE = FIELDS.index("event_type")


def settings(**over) -> N.Config:
    return N.Config(**{**SMALL, **over})


@pytest.fixture(scope="module")
def seqs(tiny_context) -> Sequences:
    s = Q.load(tiny_context)
    return Sequences(s.client_ids, np.asarray(s.tokens), s.lengths, s.sizes, s.vocab)


@pytest.fixture(scope="module")
def trained(seqs):
    info = {}
    return N.train(seqs, settings(), info), info


def untrained(seqs, **over) -> N.NextEventModel:
    torch.manual_seed(0)
    return N.build(seqs, settings(**over)).eval()


@torch.no_grad()
def accuracy(model, seqs, idx, field) -> tuple[float, float]:
    """(accuracy of the predicted next `field`, share of its most frequent value) over idx's last windows."""
    tokens, _ = N.windows(seqs, idx, SMALL["context"])
    tokens = torch.from_numpy(tokens)
    target, real = N.next_targets(tokens[..., FIELDS.index(field)], field, SMALL["item_vocab"])
    guess = model.heads[field](model.states(tokens)[:, :-1][real]).argmax(-1)
    majority = torch.bincount(target[real]).max().item() / real.sum().item()
    return (guess == target[real]).float().mean().item(), majority


def test_training_improves_next_event_accuracy_on_held_out_clients(seqs, trained):
    model, info = trained
    _, val = T.holdout_split(len(seqs.lengths), settings().val_fraction, SMALL["seed"])
    assert info["n_val"] == len(val) > 0
    for field in ("sku", "category"):  # the tiny data's next event type: see the planted test below
        before, majority = accuracy(untrained(seqs), seqs, val, field)
        after, _ = accuracy(model, seqs, val, field)
        assert after > before + 0.2 and after > 2 * majority, (field, before, after, majority)
    curve = info["curve"]
    assert len(curve) == SMALL["epochs"] and curve[-1]["val_loss"] < 0.8 * curve[0]["val_loss"]


def test_a_predictable_next_event_type_is_learned(seqs):
    """Planted: each client's event types cycle 1 -> 2 -> 3 -> 1 ... from a random start, so every
    event but a window's first is certain from the one before, while the most frequent type is only
    ~1/3 of them. (On the tiny data the next type is hardly more predictable than the majority.)"""
    steps = np.arange(seqs.tokens.shape[1])
    start = np.random.default_rng(0).integers(0, 3, len(seqs.lengths))
    tokens = seqs.tokens.copy()
    tokens[..., TYPE] = np.where(steps < seqs.lengths[:, None], 1 + (steps + start[:, None]) % 3, 0)
    planted = dataclasses.replace(seqs, tokens=tokens)
    model = N.train(planted, settings(), {})
    _, val = T.holdout_split(len(seqs.lengths), settings().val_fraction, SMALL["seed"])
    kept = np.minimum(seqs.lengths[val], SMALL["context"])
    certain = 1 - (kept > 0).sum() / kept.sum()  # a window's first event cannot be known
    after, majority = accuracy(model, planted, val, "event_type")
    assert majority < 0.4 and after > 0.95 * certain, (after, certain, majority)


def test_heads_follow_the_targets_and_the_item_cap(seqs):
    model = untrained(seqs)
    assert set(model.heads) == set(N.TARGETS)
    assert model.classes["sku"] == 3 + SMALL["item_vocab"] and model.classes["event_type"] == seqs.sizes["event_type"]
    column = torch.tensor([0, 1, 2, 3, 202, 203, 500])
    target, valid = N.next_targets(column, "sku", 200)
    assert target.tolist() == [0, 1, 2, 3, 202, RARE, RARE] and valid.tolist() == [False, False] + [True] * 5
    target, valid = N.next_targets(column, "event_type", 200)
    assert target.tolist() == column.tolist() and valid.tolist() == [False] + [True] * 6
    only = N.build(seqs, settings(targets=["event_type", "gap"]))
    assert set(only.heads) == {"event_type", "gap"}


def test_attention_is_causal(seqs):
    model = untrained(seqs)
    idx = np.flatnonzero(seqs.lengths >= 20)[:4]
    tokens, _ = N.windows(seqs, idx, SMALL["context"])
    changed = tokens.copy()
    k = 10
    changed[:, k, TYPE] = np.where(changed[:, k, TYPE] == 5, 1, 5)
    changed[:, k, FIELDS.index("sku")] = 7
    with torch.no_grad():
        a, b = (model.states(torch.from_numpy(t)) for t in (tokens, changed))
    # state i has seen events 0..i-1: event k first enters state k + 1
    assert torch.equal(a[:, : k + 1], b[:, : k + 1])
    assert not torch.allclose(a[:, k + 1], b[:, k + 1])


@pytest.mark.parametrize("pool", N.POOLS)
def test_profile_does_not_depend_on_the_batch_padding(seqs, pool):
    model = untrained(seqs)
    short = np.flatnonzero((seqs.lengths > 1) & (seqs.lengths < 20))[0]
    long_ = np.argmax(seqs.lengths)
    assert seqs.lengths[long_] > SMALL["context"]
    alone = N.profile_rows(model, seqs, np.array([short]), SMALL["context"], pool)
    together = N.profile_rows(model, seqs, np.array([long_, short]), SMALL["context"], pool)
    torch.testing.assert_close(alone[0], together[1], rtol=0, atol=1e-5)
    # and trailing padding up to the whole context changes nothing either
    tokens, kept = N.windows(seqs, np.array([short]), SMALL["context"])
    pad = np.zeros((1, SMALL["context"] - tokens.shape[1], tokens.shape[2]), tokens.dtype)
    padded = np.concatenate([tokens, pad], axis=1)
    with torch.no_grad():
        wide = N.pool_states(model.states(torch.from_numpy(padded)), torch.from_numpy(kept + 1), pool)
    torch.testing.assert_close(alone[0], wide[0], rtol=0, atol=1e-5)


def test_pools_are_the_last_state_the_mean_or_both():
    states = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    steps = torch.tensor([1, 2])
    last, mean = N.pool_states(states, steps, "last"), N.pool_states(states, steps, "mean")
    assert torch.equal(last, torch.stack([states[0, 0], states[1, 1]]))
    assert torch.equal(mean, torch.stack([states[0, 0], states[1, :2].mean(0)]))
    assert torch.equal(N.pool_states(states, steps, "last_mean"), torch.cat([last, mean], 1))


def test_windows_are_contiguous_and_seeded(seqs):
    idx = np.flatnonzero(seqs.lengths > 40)[:8]
    last, kept = N.windows(seqs, idx, 16)
    assert last.shape[1] == 16 and (kept == 16).all()
    for row, i in enumerate(idx):
        assert np.array_equal(last[row], seqs.tokens[i, seqs.lengths[i] - 16: seqs.lengths[i]])
    a, _ = N.windows(seqs, idx, 16, np.random.default_rng(3))
    b, _ = N.windows(seqs, idx, 16, np.random.default_rng(3))
    assert np.array_equal(a, b)
    for row, i in enumerate(idx):  # each random window is a run of the client's real events
        starts = [s for s in range(seqs.lengths[i] - 15) if np.array_equal(seqs.tokens[i, s:s + 16], a[row])]
        assert starts
    short = np.flatnonzero((seqs.lengths > 0) & (seqs.lengths < 16))[:1]
    tokens, kept = N.windows(seqs, short, 16)
    assert kept[0] == seqs.lengths[short[0]] and (tokens[0, kept[0]:] == 0).all()


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_empty_history_gets_the_finite_start_state(seqs, pool):
    model = untrained(seqs)
    lengths = seqs.lengths.copy()
    tokens = seqs.tokens.copy()
    lengths[:2], tokens[:2] = 0, 0
    empty = dataclasses.replace(seqs, tokens=tokens, lengths=lengths)
    out = N.profiles(model, empty, SMALL["context"], 64, pool)
    assert out.shape == (len(lengths), SMALL["hidden"]) and np.isfinite(out).all()
    assert np.array_equal(out[0], out[1]) and np.abs(out[0]).sum() > 0
    with torch.no_grad():
        start = model.states(torch.zeros((1, 1, len(FIELDS)), dtype=torch.long))[0, 0].numpy()
    np.testing.assert_allclose(out[0], start, atol=1e-6)
    assert not np.allclose(out[np.argmax(lengths)], out[0])


def test_embed_rows_follow_clients_and_are_deterministic(tiny_context):
    ctx = lambda: dataclasses.replace(tiny_context, info={})
    fast = settings(epochs=1)
    first_ctx = ctx()
    first = N.embed(first_ctx, fast)
    assert first.shape == (len(tiny_context.client_ids), SMALL["hidden"]) and first.dtype == np.float32
    assert N.embed(ctx(), dataclasses.replace(fast, pool="last_mean")).shape[1] == 2 * SMALL["hidden"]
    assert np.array_equal(first, N.embed(ctx(), fast))
    assert [row["epoch"] for row in first_ctx.info["curve"]] == [1]
    assert first_ctx.info["head_classes"]["url"] == 3 + SMALL["item_vocab"]


@pytest.mark.parametrize("bad, message", [
    ({"heads": 3}, "multiple of heads"), ({"targets": ["day"]}, "targets"), ({"targets": []}, "targets"),
    ({"fields": ["nope"]}, "unknown sequence fields"), ({"context": 0}, "context"), ({"item_vocab": -1}, "item_vocab"),
    ({"dropout": 1.0}, "dropout"), ({"pool": "max"}, "models.next_event.pool must be one of"),
])
def test_bad_settings_are_refused_before_any_work(bad, message):
    with pytest.raises(UbpError, match=message):
        build(N.Config, {**SMALL, **bad}, "models.next_event")
