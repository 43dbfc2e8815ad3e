"""contrastive: the window cut on hand-made days, the training signal, and no leak past the cutoff."""
import dataclasses
import shutil
import weakref

import numpy as np
import pandas as pd
import pytest
import torch

from ubp import schema
from ubp.io import UbpError
from ubp.models import _sequence as S
from ubp.models import _training as T
from ubp.models import contrastive as C
from ubp.sequences import FIELDS, PAD, build_sequences

FAST = {"hidden": 32, "heads": 2, "layers": 1, "input_len": 32, "target_len": 16, "projection": 16,
        "epochs": 3, "batch_size": 64, "threads": 1, "seed": 0}
DAY = FIELDS.index("day")


def config(**over) -> C.Config:
    return C.Config(**{**FAST, **over})


def hand_made(days_rows, width=10):
    """tokens whose `day` field holds the given ids (events in chronological order, PAD after)."""
    tokens = np.zeros((len(days_rows), width, len(FIELDS)), dtype=np.int16)
    for r, days in enumerate(days_rows):
        for p, d in enumerate(days):
            tokens[r, p, :] = 3  # some real id in every field
            tokens[r, p, DAY] = d
            tokens[r, p, FIELDS.index("week")] = (d - 1) // 7 + 1
    return tokens


# day id = whole days before the cutoff + 1
ROWS = [[40, 30, 22, 15, 14, 8, 1], [5, 3], [60, 50], [], [16, 15, 2]]


def test_window_bounds_cut_at_the_right_day():
    days = hand_made(ROWS)[..., DAY]
    early, late = C.window_bounds(days, 0, 14)
    # ages (day - 1): row 0 = 39, 29, 21, 14, 13, 7, 0 -> earlier = ages >= 14 (4 events), window = ages 0..13
    assert early.tolist() == [4, 0, 2, 0, 2] and late.tolist() == [7, 2, 2, 0, 3]
    early, late = C.window_bounds(days, 7, 14)  # split date 7 days back: window = ages 7..20, earlier >= 21
    assert early.tolist() == [3, 0, 2, 0, 0] and late.tolist() == [6, 0, 2, 0, 2]
    # per-row shifts give the same cut as one shift at a time
    e2, l2 = C.window_bounds(days, np.array([0, 7, 0, 7, 14]), 14)
    assert (e2[0], l2[0], e2[1], l2[1], e2[4], l2[4]) == (4, 7, 0, 0, 0, 2)


@pytest.mark.parametrize("shift", [0, 7, 14])
def test_earlier_part_ends_before_the_window_and_the_window_before_the_split(shift):
    rng = np.random.default_rng(shift)
    rows = [sorted(rng.integers(1, 60, rng.integers(0, 30)).tolist(), reverse=True) for _ in range(50)]
    days = hand_made(rows, width=30)[..., DAY].astype(np.int64)
    early, late = C.window_bounds(days, shift, 14)
    for r in range(len(rows)):
        age = days[r] - 1
        assert (age[:early[r]] >= shift + 14).all(), "nothing at or after the window start in the earlier part"
        window = age[early[r]:late[r]]
        assert ((window >= shift) & (window < shift + 14)).all(), "window = the last 14 days before the split"
        after = age[late[r]:][days[r, late[r]:] > PAD]
        assert (after < shift).all(), "events after the split date are left out"
        assert late[r] - early[r] == ((age >= shift) & (age < shift + 14) & (days[r] > PAD)).sum()


def test_slices_keep_the_last_events_with_time_relative_to_the_split():
    tokens = hand_made(ROWS)
    early, late = C.window_bounds(tokens[..., DAY], 0, 14)
    rows = np.arange(len(ROWS))
    got, lengths = C.slice_tokens(tokens, rows, np.zeros_like(early), early, 3, np.full(len(ROWS), 14))
    assert lengths.tolist() == [3, 0, 2, 0, 2]
    assert got[0, :3, DAY].tolist() == [30 - 14, 22 - 14, 15 - 14], "the last 3, counted from the window start"
    assert got[0, :3, FIELDS.index("week")].tolist() == [3, 2, 1]
    assert (got[1] == PAD).all() and (got[0, 3:] == PAD).all()
    win, win_len = C.slice_tokens(tokens, rows, early, late, 2, np.zeros(len(ROWS), dtype=np.int64))
    assert win_len.tolist() == [2, 2, 0, 0, 1] and win[0, :2, DAY].tolist() == [8, 1]


def test_truncated_clients_use_only_complete_windows():
    days = hand_made([[20, 10, 5, 1], [10, 5, 1], [10, 5]], width=4)[..., DAY]
    usable = C.usable_shifts(days, np.array([4, 3, 2]), 4, [0, 7], 14)
    # row 0 is truncated (length = max_len) but has history before both windows; row 1 is not truncated
    assert usable.tolist() == [[True, False], [True, True], [True, True]]


def test_labels_describe_the_whole_window():
    tokens = hand_made([[20, 5, 3, 2]], width=4)
    et, cat, price = (FIELDS.index(f) for f in ("event_type", "category", "price"))
    tokens[0, :, et] = [C.BUY, C.BUY, C.CART, 4]  # the first buy is before the window
    tokens[0, :, cat] = [3, 4, 5, 1]
    tokens[0, :, price] = [2, 2 + 95, 2 + 5, 1]
    early, late = C.window_bounds(tokens[..., DAY], 0, 14)
    y = C.window_labels(tokens, np.array([0]), early, late, top_categories=3, price_bins=2, n_prices=100)[0]
    assert y[:5].tolist() == [1, 1, 0, 1, 0]  # buy, cart, no remove, visit, no search
    assert y[5:8].tolist() == [0, 1, 1]  # categories 1 and 2 (ids 4, 5), not the one bought before
    assert y[8:].tolist() == [1, 1]  # price 5 (first half) and 95 (second half)
    assert C.window_labels(tokens, np.array([0]), late, late, 3, 2, 100).sum() == 0, "empty window: all 0"


@pytest.fixture(scope="module")
def stored_context(tiny_context, tmp_path_factory):
    """tiny_context with its sequences built once from the split input, as the sequences stage would."""
    out = tmp_path_factory.mktemp("sequences")
    build_sequences(tiny_context.events_dir, tiny_context.properties_path, tiny_context.client_ids,
                    tiny_context.cutoff, out)
    return dataclasses.replace(tiny_context, sequences_dir=out, info={})


@pytest.fixture(scope="module")
def tiny_sequences(stored_context):
    return S.load(stored_context)


def test_training_brings_matching_windows_together(tiny_sequences):
    """On held-out clients, NT-Xent falls below chance and a client's own later window ranks higher."""
    s = config(hidden=64, projection=32, lr=3e-3, epochs=6, patience=6, val_fraction=0.3)
    with T.deterministic(1):
        val = T.holdout_split(len(tiny_sequences.lengths), 0.3, 0)[1]
        torch.manual_seed(0)
        untrained = C.TwoTower(tiny_sequences.sizes, s, C.Examples(tiny_sequences, s, "cpu").n_labels).eval()
        model, data = C.train(tiny_sequences, s, info := {}, torch.device("cpu"))
        batch = data.batch(val, np.zeros(len(val), dtype=np.int64))  # all held-out clients at shift 0
        before, after = C.loss_terms(untrained, batch, s)[0].item(), C.loss_terms(model, batch, s)[0].item()
        top10 = [C.retrieval_accuracy(m, batch, k=10) for m in (untrained, model)]
    pairs = int(batch["pair"].sum())
    assert info["n_val"] >= 150 and pairs >= 80
    assert min(r["val_loss"] for r in info["curve"]) < info["curve"][0]["val_loss"]
    chance = np.log(pairs)  # NT-Xent when every window is equally similar
    assert after < min(before, chance) - 0.1, f"held-out NT-Xent {before:.3f} -> {after:.3f}, chance {chance:.3f}"
    assert top10[1] > top10[0] + 0.05, f"top-10 retrieval {top10[0]:.3f} -> {top10[1]:.3f} among {pairs}"


@pytest.fixture(scope="module")
def split_profile(stored_context):
    return C.embed(dataclasses.replace(stored_context, info={}), config())


def test_profile_shape_and_determinism(split_profile, stored_context):
    assert split_profile.shape == (len(stored_context.client_ids), FAST["hidden"])
    assert split_profile.dtype == np.float32 and np.isfinite(split_profile).all()
    assert np.array_equal(split_profile, C.embed(dataclasses.replace(stored_context, info={}), config()))
    assert not np.array_equal(split_profile, C.embed(dataclasses.replace(stored_context, info={}), config(seed=1)))


def test_no_leak_from_events_after_the_cutoff(split_profile, tiny_context, tiny_dirs, tmp_path):
    """Reading ALL events (the target windows included) gives the same bytes as the split input, and
    so does a copy of all events whose post-cutoff part is rewritten (sequences built from them here)."""
    canonical = dataclasses.replace(tiny_context, events_dir=tiny_dirs["canonical"], info={})
    assert np.array_equal(C.embed(canonical, config()), split_profile)

    cutoff = pd.Timestamp(tiny_context.cutoff)
    for event in schema.EVENT_TYPES:
        frame = pd.read_parquet(tiny_dirs["canonical"] / f"{event}.parquet")
        late = frame["timestamp"] >= cutoff
        assert event != schema.PRODUCT_BUY or late.any(), "the canonical data must hold target-window purchases"
        if schema.SKU in frame and late.any():
            frame.loc[late, schema.SKU] = frame[schema.SKU].iloc[::-1].to_numpy()[late.to_numpy()]
        extra = frame[~late].head(200).assign(timestamp=cutoff + pd.Timedelta(hours=3))
        pd.concat([frame, extra]).to_parquet(tmp_path / f"{event}.parquet", index=False)
    shutil.copy(tiny_context.properties_path, tmp_path / "props.parquet")
    perturbed = dataclasses.replace(tiny_context, events_dir=tmp_path, properties_path=tmp_path / "props.parquet",
                                    info={})
    assert np.array_equal(C.embed(perturbed, config()), split_profile)


def test_encode_releases_each_batch_and_embeds_every_row_in_order(tiny_sequences):
    """Profiles of all rows equal each row's own profile, and no batch output is kept until the end
    (kept, they fragmented the heap: 24 GB at 1M clients)."""
    s = config(batch_size=8)
    with T.deterministic(1):
        torch.manual_seed(0)
        data = C.Examples(tiny_sequences, s, "cpu")
        model, outputs = C.TwoTower(tiny_sequences.sizes, s, data.n_labels).eval(), []
        profile = model.profile

        def watched(tokens, lengths):
            assert all(ref() is None for ref in outputs), "an earlier batch's output is still alive"
            y = profile(tokens, lengths).numpy().copy()  # an array of its own: its lifetime is the output's
            outputs.append(weakref.ref(y))
            return torch.from_numpy(y)

        model.profile = watched
        rows = np.arange(40)[::-1]
        out = C.encode(model, data, rows, s, torch.device("cpu"))
        alone = np.concatenate([C.encode(model, data, rows[i:i + 1], s, torch.device("cpu")) for i in range(3)])
    assert out.shape == (40, s.hidden) and len(outputs) == 3 + 3  # 40 rows in batches of 16, then 3 alone
    np.testing.assert_allclose(out[:3], alone, rtol=1e-5, atol=1e-5)
    assert C.encode(model, data, np.arange(0), s, torch.device("cpu")).shape == (0, s.hidden)


@pytest.mark.parametrize("bad, message", [({"hidden": 30, "heads": 4}, "heads"), ({"shifts": [0, 175]}, "max_days"),
                                          ({"shifts": [-7]}, "shifts"), ({"input_fields": ["nope"]}, "fields")])
def test_bad_settings_are_reported(stored_context, bad, message):
    with pytest.raises(UbpError, match=message):
        C.embed(dataclasses.replace(stored_context, info={}), config(**bad))
