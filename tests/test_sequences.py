"""The sequences stage on the hand-made log of tests/features/conftest.py, every id checked by hand.

Client 1's 12 events before the cutoff, in time order: add 10 (-31d), buy 10 (-30d), search v1
(-10d), search v3 (-10d+5m), buy 11 (-7d-1s), buy 10 (-7d), add 12 (-3d), remove 12 (-2d),
add 11 (-1d), visit 5 (-60m), visit 5 (-50m), visit 6 (-10m). Frequencies before the cutoff, all
clients: skus 12:4, 10:3, 11:2; urls 5:4, 6:2, 7:1; categories 100:5, 200:4.
"""
from dataclasses import replace

import numpy as np
import pytest

from ubp.io import UbpError
from ubp.models.base import EmbedContext
from ubp.sequences import (FIELDS, MISSING, PAD, RARE, SequencesConfig, build_sequences, gap_ids, load_or_build,
                           load_sequences, main)
from tests.conftest import refuses_before_any_work
from tests.features.conftest import CUTOFF, D, write_log

COL = {f: i for i, f in enumerate(FIELDS)}
BUY, ADD, REMOVE, VISIT, SEARCH = 1, 2, 3, 4, 5
ORDER = np.array([4, 2, 1, 3], dtype=np.int64)


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    return write_log(tmp_path_factory.mktemp("sequences_log"))


@pytest.fixture(scope="module")
def built(log, tmp_path_factory):
    out = tmp_path_factory.mktemp("seq")
    vocab = build_sequences(*log, ORDER, CUTOFF, out, SequencesConfig(max_len=8, top_k=2))
    return out, vocab


def rows_of(built, client):
    seqs = load_sequences(built[0])
    i = int(np.flatnonzero(seqs.client_ids == client)[0])
    return seqs.tokens[i, :seqs.lengths[i]], seqs.lengths[i], seqs.tokens[i]


def test_vocabulary_is_top_k_by_frequency(built):
    _, vocab = built
    assert vocab["top"] == {"category": [100, 200], "sku": [12, 10], "url": [5, 6]}
    assert vocab["sizes"]["sku"] == 3 + 2 and vocab["sizes"]["price"] == 102 and vocab["sizes"]["code0"] == 258


def test_rows_follow_the_requested_order_and_lengths(built):
    seqs = load_sequences(built[0])
    assert seqs.client_ids.tolist() == ORDER.tolist()
    assert seqs.lengths.tolist() == [3, 0, 8, 1]  # client 1 truncated from 12 to the last 8
    assert seqs.tokens.dtype == np.int16 and seqs.tokens.shape == (4, 8, len(FIELDS))


def test_truncation_keeps_the_last_events_in_time_order(built):
    events, _, _ = rows_of(built, 1)
    assert events[:, COL["event_type"]].tolist() == [BUY, BUY, ADD, REMOVE, ADD, VISIT, VISIT, VISIT]
    # sku 11 is outside the top 2 -> RARE; visits have no sku
    assert events[:, COL["sku"]].tolist() == [RARE, 4, 3, 3, RARE, MISSING, MISSING, MISSING]
    assert events[:, COL["url"]].tolist() == [MISSING] * 5 + [3, 3, 4]
    assert events[:, COL["category"]].tolist() == [3, 3, 4, 4, 3, MISSING, MISSING, MISSING]
    assert events[:, COL["price"]].tolist() == [32, 12, 52, 52, 32, MISSING, MISSING, MISSING]


def test_day_week_and_gap(built):
    events, _, _ = rows_of(built, 1)
    assert events[:, COL["day"]].tolist() == [8, 8, 4, 3, 2, 1, 1, 1]  # whole days before the cutoff + 1
    assert events[:, COL["week"]].tolist() == [2, 2, 1, 1, 1, 1, 1, 1]
    # the first kept event's gap is to the dropped search at -10d+5m: 3 days - 5 min - 1 s -> bucket [1d, 3d)
    assert events[0, COL["gap"]] == gap_ids(np.array([3 * 86400 - 301]))[0] == 2 + 8
    assert events[1, COL["gap"]] == 2 + 1  # 1 second: [1 s, 10 s)
    assert events[5, COL["gap"]] == 2 + 7  # visit at -60m after add at -1d: 23 h -> [6 h, 1 d)
    assert events[6, COL["gap"]] == 2 + 4  # 10 minutes: [5 min, 30 min)


def test_codes_are_name_for_products_query_for_searches(built, log, tmp_path):
    events, _, _ = rows_of(built, 1)
    codes = events[:, [COL[f"code{i}"] for i in range(16)]]
    assert codes[0].tolist() == [20 + i + 2 for i in range(16)]  # sku 11's name, base 20
    assert (codes[5:] == MISSING).all()
    vocab = build_sequences(*log, np.array([1]), CUTOFF, tmp_path, SequencesConfig(max_len=128))
    full = load_sequences(tmp_path)
    assert full.lengths[0] == 12 and vocab["settings"]["max_len"] == 128
    assert full.tokens[0, 2, COL["event_type"]] == SEARCH
    assert full.tokens[0, 2, COL["code0"]] == 1 + 2 and full.tokens[0, 3, COL["code15"]] == 3 + 15 + 2
    assert full.tokens[0, 0, COL["gap"]] == MISSING


def test_events_at_or_after_the_cutoff_are_not_seen(built):
    events, length, padded = rows_of(built, 3)
    assert length == 1 and events[0, COL["event_type"]] == VISIT and events[0, COL["url"]] == RARE  # url 7: 3rd
    assert events[0, COL["day"]] == 41 and events[0, COL["gap"]] == MISSING
    assert (padded[1:] == PAD).all()


def test_client_without_events_is_all_padding(built):
    _, length, padded = rows_of(built, 2)
    assert length == 0 and (padded == PAD).all()


def test_deterministic_and_reorderable(built, log, tmp_path):
    build_sequences(*log, ORDER, CUTOFF, tmp_path, SequencesConfig(max_len=8, top_k=2))
    assert (tmp_path / "tokens.npy").read_bytes() == (built[0] / "tokens.npy").read_bytes()
    reordered = load_sequences(built[0], np.array([1, 2, 3, 4]))
    original = load_sequences(built[0])
    assert isinstance(original.tokens, np.memmap) and isinstance(reordered.tokens, np.memmap)  # never read whole
    order = [ORDER.tolist().index(c) for c in (1, 2, 3, 4)]
    assert np.array_equal(reordered.tokens, original.tokens[order])
    assert np.array_equal(reordered.lengths, original.lengths[order])
    with pytest.raises(UbpError, match="not the 2 requested"):
        load_sequences(built[0], np.array([1, 2]))


def test_load_or_build_uses_the_stage_output_only_when_it_fits(built, log):
    ctx = EmbedContext(client_ids=ORDER, events_dir=log[0], properties_path=log[1], cutoff=CUTOFF,
                       sequences_dir=built[0], sequence_settings=SequencesConfig(max_len=8, top_k=2))
    assert np.array_equal(load_or_build(ctx).tokens, load_sequences(built[0]).tokens)
    earlier = load_or_build(replace(ctx, cutoff=CUTOFF - 5 * D))  # rebuilt: the stage was for CUTOFF
    assert earlier.vocab["cutoff"] == "2022-07-27 00:00:00"
    assert earlier.lengths[ORDER.tolist().index(1)] == 6  # the 6 events before -5 days
    assert rows_of(built, 1)[0][-1, COL["url"]] == 4  # sanity: the stored one is unchanged
    longer = load_or_build(replace(ctx, sequence_settings=SequencesConfig(max_len=16, top_k=2)))
    assert longer.lengths.tolist() == [3, 0, 12, 1]


def test_sequences_built_on_the_fly_stay_mapped_until_unused(log):
    import gc
    from pathlib import Path

    ctx = EmbedContext(client_ids=ORDER, events_dir=log[0], properties_path=log[1], cutoff=CUTOFF)
    seqs = load_or_build(ctx)
    path = Path(seqs.tokens.filename)
    assert isinstance(seqs.tokens, np.memmap) and path.is_file()
    view = seqs.tokens[..., COL["day"]]
    client_1 = np.array(seqs.tokens[ORDER.tolist().index(1)])
    del seqs
    gc.collect()
    assert path.is_file() and view.shape == (4, 128)  # a view keeps the map (and its file) alive
    assert np.array_equal(view[ORDER.tolist().index(1)], client_1[:, COL["day"]])
    del view
    gc.collect()
    assert not path.exists()


def test_bad_settings_and_missing_files(log, tmp_path):
    with pytest.raises(UbpError, match="max_len must be a positive integer"):
        SequencesConfig(max_len=0)
    with pytest.raises(UbpError, match="file not found"):
        build_sequences(tmp_path / "nowhere", log[1], ORDER, CUTOFF, tmp_path)
    with pytest.raises(UbpError, match="duplicate client ids"):
        build_sequences(*log, np.array([1, 1]), CUTOFF, tmp_path)


@pytest.mark.parametrize("sequences, match", [
    ({"max_lne": 64}, r"unknown key 'sequences\.max_lne'; did you mean 'max_len'"),
    ({"top_k": 1.5}, r"sequences\.top_k must be an integer, got 1\.5"),
    ({"memory_limit": "lots"}, r"sequences\.memory_limit: expected a size"),
])
def test_stage_refuses_bad_settings_before_any_work(tmp_path, monkeypatch, sequences, match):
    refuses_before_any_work(main, [], {"sequences": sequences}, match, tmp_path, monkeypatch)
