"""gru_ae: start/end tokens and targets, last-L truncation, training improves reconstruction, empty
histories and padding-invariant profiles, both variants of seed 001 on the tiny data."""
import dataclasses

import numpy as np
import pytest
import torch

from ubp.config import build
from ubp.io import UbpError
from ubp.models import _sequence as S
from ubp.models import gru_ae as G
from ubp.sequences import FIELDS, PAD, RARE

FAST = {"hidden": 32, "layers": 2, "max_len": 32, "output_top": 50, "epochs": 6, "patience": 6,
        "batch_size": 64, "lr": 3e-3, "threads": 1, "seed": 0}


@pytest.fixture(scope="module")
def seqs(tiny_context):
    return S.load(tiny_context)


@pytest.fixture(scope="module")
def recent(seqs):
    return S.last_events(seqs.tokens, seqs.lengths, np.arange(len(seqs.lengths)), FAST["max_len"])


def hand_tokens(lengths, width=6, seed=0):
    """Left-aligned int16 tokens of all FIELDS, ids 1..4 on real events, PAD after."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 5, size=(len(lengths), width, len(FIELDS))).astype(np.int16)
    tokens[np.arange(width)[None, :] >= np.asarray(lengths)[:, None]] = PAD
    return tokens, np.asarray(lengths, dtype=np.int64)


def test_a_batch_reads_the_last_events_left_aligned():
    tokens, lengths = hand_tokens([6, 3, 0])
    tokens[0, :, 0] = [1, 2, 3, 4, 5, 6]
    out, kept = G._batch(tokens, lengths, np.array([0, 1, 2]), "cpu", max_len=4)
    assert out.shape == (3, 4, len(FIELDS)) and kept.tolist() == [4, 3, 0]
    assert out[0, :, 0].tolist() == [3, 4, 5, 6]
    assert np.array_equal(out[1, :3].numpy(), tokens[1, :3]) and (out[1, 3] == PAD).all() and (out[2] == PAD).all()
    same, _ = G._batch(tokens, lengths, np.array([0, 1, 2]), "cpu")
    assert np.array_equal(same.numpy(), tokens)
    only_short, kept = G._batch(tokens, lengths, np.array([2, 1]), "cpu", max_len=4)  # cut to the longest row read
    assert only_short.shape == (2, 3, len(FIELDS)) and kept.tolist() == [0, 3]


def test_targets_end_with_end_and_rare_ids_fold_into_rare():
    sizes = {f: 10 for f in FIELDS} | {"sku": 5003, "event_type": 6}
    assert G.head_sizes(sizes, ("event_type", "sku"), 100) == {"event_type": 7, "sku": 104}
    assert G.head_sizes(sizes, ("sku",), None) == {"sku": 5004}
    model = G.GRUAutoencoder(sizes, ("event_type", "sku"), 8, 1, 0.0, output_top=2)  # sku classes: 0..4 + END 5
    tokens, lengths = hand_tokens([3, 1], width=3)
    sku = FIELDS.index("sku")
    tokens[0, :3, sku] = [3, 4, 700]
    tokens[1, :1, sku] = [1]
    tokens_t, lengths_t = torch.from_numpy(tokens.astype(np.int64)), torch.from_numpy(lengths)
    states, mask = model(tokens_t, lengths_t)
    assert mask.tolist() == [[True] * 4, [True, True, False, False]] and states.shape == (6, 8)
    targets = model.targets(tokens_t, lengths_t, mask)
    assert targets["sku"].tolist() == [3, 4, RARE, 5, 1, 5]
    assert targets["event_type"][[3, 5]].tolist() == [6, 6]  # END of each sequence


def test_training_improves_reconstruction_on_held_out_clients(seqs, recent):
    tokens, lengths = recent
    s = G.Config(**FAST)
    _, val_idx = G.T.holdout_split(len(lengths), 0.1, 0)
    torch.manual_seed(0)
    untrained = G.GRUAutoencoder(seqs.sizes, S.resolve_fields(s.fields), 32, 2, 0.1, 50).eval()
    before, acc_before = G.reconstruction(untrained, tokens, lengths, val_idx, 256)
    info = {}
    model = G.train(tokens, lengths, seqs.sizes, s, info)
    after, acc_after = G.reconstruction(model, tokens, lengths, val_idx, 256)
    assert info["n_val"] == len(val_idx) and len(info["curve"]) >= 2
    assert after < 0.8 * before, f"val loss {before:.3f} -> {after:.3f}"
    assert acc_after["event_type"] > acc_before["event_type"] + 0.1, (acc_before, acc_after)
    assert info["val_accuracy_event_type"] == pytest.approx(acc_after["event_type"], abs=1e-4)


@pytest.fixture(scope="module")
def small_model(seqs):
    torch.manual_seed(1)
    return G.GRUAutoencoder(seqs.sizes, S.resolve_fields("week_all"), 16, 2, 0.1, 50).eval()


def test_profile_does_not_depend_on_batch_company(small_model, recent):
    tokens, lengths = recent
    mid = np.flatnonzero((lengths > 2) & (lengths < lengths.max()))[0]
    short = np.flatnonzero((lengths > 0) & (lengths < lengths[mid]))[0]
    long = np.flatnonzero(lengths == lengths.max())[:4]
    assert lengths[short] < lengths[mid] < lengths[long].min()
    encode = lambda idx: small_model.encode(*G._batch(tokens, lengths, np.asarray(idx), "cpu")).detach().numpy()
    alone = encode([mid])[0]
    with_longer = encode([long[0], mid, *long[1:]])[1]
    with_shorter = encode([short, mid])[1]
    np.testing.assert_allclose(with_longer, alone, atol=1e-6)
    np.testing.assert_allclose(with_shorter, alone, atol=1e-6)
    everyone = G.profiles(small_model, tokens, lengths, 128)
    np.testing.assert_allclose(everyone[mid], alone, atol=1e-6)


def test_an_empty_history_gets_a_finite_learned_profile(small_model, recent):
    tokens, lengths = recent
    empty_tokens, empty_lengths = hand_tokens([0, 0], width=4)
    out = G.profiles(small_model, empty_tokens, empty_lengths, 8)
    assert np.isfinite(out).all() and np.abs(out).sum() > 0 and np.array_equal(out[0], out[1])
    # Among clients with events, in one batch: the same vector as alone.
    rows = np.flatnonzero(lengths >= 4)[:3]
    together = (np.concatenate([tokens[rows, :4], empty_tokens[:1]]),
                np.concatenate([np.full(3, 4), [0]]))
    both = G.profiles(small_model, *together, 8)
    np.testing.assert_allclose(both[3], out[0], atol=1e-6)
    assert not np.allclose(both[0], out[0])


@pytest.mark.parametrize("fields, hidden", [("week_all", 32), ("day_event_type", 24)])
def test_both_variants_embed_deterministically(tiny_context, fields, hidden):
    cfg = G.Config(**{**FAST, "fields": fields, "hidden": hidden, "epochs": 2})
    run = lambda: G.embed(dataclasses.replace(tiny_context, info={}), cfg)
    first, again = run(), run()
    assert first.shape == (len(tiny_context.client_ids), hidden) and first.dtype == np.float32
    assert np.isfinite(first).all() and np.array_equal(first, again)
    assert np.abs(first).max() <= 1.0  # GRU states (ubp.embed.compute standardizes them)


@pytest.mark.parametrize("bad, message", [
    ({"fields": ["event_type", "colour"]}, "unknown sequence fields"), ({"fields": "nope"}, "fields must be one of"),
    ({"hidden": 0}, "hidden=0"), ({"layers": -1}, "layers"), ({"max_len": 0}, "max_len"),
    ({"output_top": 0}, "output_top"), ({"dropout": 1.0}, "dropout"), ({"max_len": 1.5}, "max_len must be an integer"),
])
def test_bad_settings_are_clear_errors_before_any_work(bad, message):
    with pytest.raises(UbpError, match=message):
        build(G.Config, {**FAST, **bad}, "models.gru_ae")
