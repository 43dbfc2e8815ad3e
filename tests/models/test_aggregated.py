"""aggregated = the official baseline's definition (SPEC §9.1), quirks included.

A hand-made log whose rows are out of time order checks each quirk against values worked out by
hand; on the tiny generated data, with its rows shuffled, the SQL must give the same float16 bytes
as a plain per-client pandas transcription of the official rules.
"""
import dataclasses
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ubp import schema
from ubp.data.ingest import ingest
from ubp.features.build import FeaturesConfig
from ubp.io import UbpError
from ubp.models import aggregated
from ubp.models.aggregated import Config
from ubp.models.base import EmbedContext
from ubp.params import model_config
from tests.data.conftest import events, vector, write_raw

A, B, C, X = 1, 2, 3, 9  # A, B, C asked for (C has no events); X is another client
PROPERTIES = {10: (100, 5), 11: (300, 6), 12: (200, 5), 13: (400, 7)}  # sku -> (category, price)


def handmade_tables() -> dict[str, pd.DataFrame]:
    buys = [
        (A, "2022-03-10 10:00:00", 10),  # A's latest purchase, first in the file
        (A, "2022-03-01 00:00:00", 11),
        *[(X, "2022-03-05 00:00:00", 13)] * 5,  # X's sku would top every column if X counted
        (X, "2022-03-20 00:00:00", 13),  # X's date is no max_date either
        (B, "2022-03-10 12:00:00", 12),  # max_date: the latest purchase of A, B, C
        (A, "2022-03-08 00:00:00", 12),
        (B, "2022-03-02 00:00:00", 11),
        (A, "2022-03-09 00:00:00", 12),
        (B, "2022-03-04 00:00:00", 12),
        (B, "2022-03-05 00:00:00", 11),
    ]
    other = [(X, "2022-03-05 00:00:00", 10)]
    visits = [(A, "2022-03-06 00:00:00", 77)] * 2049  # beyond float16's exact integers
    searches = [(A, "2022-03-06 00:00:00", "[" + " ".join(["1"] * 15 + ["255"]) + "]"),
                (A, "2022-03-07 00:00:00", "[" + " ".join(["2"] * 15 + ["255"]) + "]"),
                (A, "2022-03-08 00:00:00", "[" + " ".join(["2"] * 15 + ["254"]) + "]"),
                (X, "2022-03-08 00:00:00", vector(9))]
    props = pd.DataFrame([(s, c, p, vector(s)) for s, (c, p) in PROPERTIES.items()], columns=list(schema.PROPERTY_COLUMNS))
    return {schema.PRODUCT_BUY: events(buys, schema.SKU), schema.ADD_TO_CART: events(other, schema.SKU),
            schema.REMOVE_FROM_CART: events(other, schema.SKU), schema.PAGE_VISIT: events(visits, schema.URL),
            schema.SEARCH_QUERY: events(searches, schema.QUERY), schema.PROPERTIES: props}


@pytest.fixture(scope="module")
def handmade(tmp_path_factory) -> EmbedContext:
    root = tmp_path_factory.mktemp("aggregated")
    ingest(write_raw(root / "raw", handmade_tables(), np.array([A, B, C])), root / "canonical")
    return EmbedContext(client_ids=np.array([C, B, A]), events_dir=root / "canonical",
                        properties_path=root / "canonical" / f"{schema.PROPERTIES}.parquet",
                        cutoff=datetime(2022, 3, 25))


def test_handmade_log_gives_the_official_quirks(handmade):
    got = aggregated.embed(handmade, Config(windows=(1, 3), top_n=2, threads=1))
    # buy: 13 = count + 2 windows x (sku, category, price) x 2 top values; add, remove: only the
    # count (no event of A, B, C: no top values); visit: count + 2 x 1 url; search: 16
    assert got.dtype == np.float16 and got.shape == (3, 13 + 1 + 1 + 3 + 16)
    # top values over A and B only: sku [12, 11], category [200, 300], price [5, 6]. Windows end at
    # B's 03-10 12:00. A's rows in file order: 03-10 sku 10, 03-01 sku 11, 03-08 sku 12, 03-09 sku 12;
    # 3 of them precede 03-09 12:00, so the 1-day window counts A's last file row (sku 12), not its
    # 03-10 purchase of sku 10; 1 precedes 03-07 12:00, so the 3-day window counts rows 2-4.
    a_buy = [4, 1, 0, 1, 0, 1, 0, 2, 1, 2, 1, 2, 1]
    # B's rows: 03-10 sku 12, 03-02 sku 11, 03-04 sku 12, 03-05 sku 11: 3 precede both window starts
    b_buy = [4, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert got[2, :13].tolist() == a_buy and got[1, :13].tolist() == b_buy
    assert got[:, 13:15].tolist() == [[0, 0]] * 3
    assert got[2, 15:18].tolist() == [2048, 2048, 2048]  # 2049 visits of url 77, rounded to float16
    means = [np.float16(5 / 3)] * 15 + [np.float16(764 / 3)]  # 1.667, 254.625: the float16 mean
    assert got[2, 18:].tolist() == means and means[-1] == 254.625
    assert not got[0].any() and not got[1, 15:].any()  # C has no events, B no visits or searches


def test_the_order_of_the_asked_for_clients_is_kept(handmade):
    got = aggregated.embed(handmade, Config(windows=(1, 3), top_n=2))
    swapped = aggregated.embed(dataclasses.replace(handmade, client_ids=np.array([A, C, B])), Config(windows=(1, 3), top_n=2))
    assert np.array_equal(swapped, got[[2, 0, 1]])


def test_top_values_are_ordered_as_pandas_2_value_counts():
    """pandas 2.2 (the official run's) value_counts = counts in order of first appearance sorted by
    Series.sort_values(ascending=False, kind="quicksort"); ties keep numpy's quicksort order."""
    rng = np.random.default_rng(3)
    for size in (5, 40, 3000):
        values = rng.permutation(size * 3)[rng.integers(0, size, 20 * size)]
        counts = pd.Series(values).value_counts(sort=False)
        want = counts.sort_values(ascending=False, kind="quicksort").index.to_numpy()
        assert np.array_equal(counts.index.to_numpy()[aggregated.value_counts_order(counts.to_numpy())], want)


def shuffled(ctx: EmbedContext, root) -> EmbedContext:
    """The context's events with their rows in a random order (the official windows depend on it)."""
    rng = np.random.default_rng(0)
    for event_type in schema.EVENT_TYPES:
        frame = pd.read_parquet(ctx.events(event_type))
        frame.iloc[rng.permutation(len(frame))].to_parquet(root / f"{event_type}.parquet", index=False)
    return dataclasses.replace(ctx, events_dir=root, info={})


def reference(ctx: EmbedContext, windows, top_n) -> np.ndarray:
    """The official rules transcribed client by client with pandas (SPEC §9.1)."""
    props = pd.read_parquet(ctx.properties_path)[[schema.SKU, schema.CATEGORY, schema.PRICE]]
    row = {c: i for i, c in enumerate(ctx.client_ids.tolist())}
    blocks = []
    for event_type in schema.EVENT_TYPES:
        frame = pd.read_parquet(ctx.events(event_type))
        frame = frame[(frame[schema.TIMESTAMP] < ctx.cutoff) & frame[schema.CLIENT_ID].isin(ctx.client_ids)]
        if event_type == schema.SEARCH_QUERY:
            block = np.zeros((len(row), schema.VECTOR_DIM), np.float16)
            for client, group in frame.groupby(schema.CLIENT_ID):
                block[row[client]] = np.stack([np.asarray(q, np.float16) for q in group[schema.QUERY]]).mean(axis=0)
            blocks.append(block)
            continue
        if event_type in schema.PRODUCT_EVENTS:  # a left merge keeps the file's row order
            frame = frame.merge(props, on=schema.SKU, how="left")
        columns = aggregated.COUNTED_COLUMNS[event_type]
        top = {c: frame[c].value_counts(sort=False).sort_values(ascending=False, kind="quicksort").index[:top_n]
               for c in columns}
        max_date = frame[schema.TIMESTAMP].max()
        block = np.zeros((len(row), 1 + len(windows) * sum(len(t) for t in top.values())), np.float16)
        for client, group in frame.groupby(schema.CLIENT_ID):
            out = block[row[client]]
            out[0] = len(group)
            k = 1
            for days in windows:
                start = np.sort(group[schema.TIMESTAMP].to_numpy()).searchsorted(np.datetime64(max_date - timedelta(days=days)))
                for column in columns:
                    tail = group[column].to_numpy()[start:]  # the unsorted rows: the official slice
                    for value in top[column]:
                        out[k] = np.sum(tail == value)
                        k += 1
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


@pytest.mark.parametrize("windows,top_n,shift", [([1, 7, 30], 10, 0), ([3, 14], 4, 14)])
def test_same_bytes_as_the_official_rules(tiny_context, tmp_path, windows, top_n, shift):
    ctx = dataclasses.replace(shuffled(tiny_context, tmp_path), client_ids=tiny_context.client_ids[::-1].copy(),
                              cutoff=tiny_context.cutoff - timedelta(days=shift))
    got = aggregated.embed(ctx, Config(windows=tuple(windows), top_n=top_n, threads=1))
    expected = reference(ctx, windows, top_n)
    assert got.dtype == np.float16 and got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()
    assert expected[:, 0].any() and expected[:, -1].any()  # not all zeros: the reference can disagree
    if shift == 0:  # every column has 10 distinct values among the tiny data's relevant clients
        assert got.shape[1] == 320


def test_unknown_setting_is_refused():
    params = {"embedding": {"seed": 0}, "models": {"aggregated": {"method": "aggregated", "inherits": "embedding",
                                                                  "reads": "split", "top_k": 5}}}
    with pytest.raises(UbpError, match="models.aggregated.top_k"):
        model_config(params, "aggregated")


def test_memory_limit_comes_from_the_feature_settings(tiny_context, monkeypatch):
    from ubp.features import build

    seen, connect = [], build.connect
    monkeypatch.setattr(build, "connect", lambda **kw: seen.append(kw["memory_limit"]) or connect(**kw))
    ctx = dataclasses.replace(tiny_context, feature_settings=FeaturesConfig(memory_limit="64MB"), info={})
    base = aggregated.embed(dataclasses.replace(tiny_context, info={}), Config(windows=(7,), top_n=3))
    assert np.array_equal(aggregated.embed(ctx, Config(windows=(7,), top_n=3)), base)
    assert seen == [None, "64MB"]
    with pytest.raises(UbpError, match="features.memory_limit"):
        FeaturesConfig(memory_limit="a lot")
