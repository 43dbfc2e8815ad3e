"""aggregated (SPEC §9.1) against a straightforward pandas computation of its definition, on the tiny
data (600 relevant clients among 3,000): the relevant-clients-first SQL must give the same bytes."""
import dataclasses
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from ubp import schema
from ubp.io import UbpError
from ubp.models import aggregated


def reference(ctx, windows, top_n) -> np.ndarray:
    """Top values over every client's events before the cutoff (count desc, then value), counted per
    relevant client and window (events at most `days` before the cutoff); mean query vector."""
    props = pd.read_parquet(ctx.properties_path)
    blocks = []
    for event_type in schema.EVENT_TYPES:
        events = pd.read_parquet(ctx.events(event_type))
        events = events[events[schema.TIMESTAMP] < ctx.cutoff]
        if event_type in schema.PRODUCT_EVENTS:
            events = events.merge(props[[schema.SKU, schema.CATEGORY, schema.PRICE]], on=schema.SKU)
        tops = {}
        for column in aggregated.COUNTED_COLUMNS[event_type]:
            counts = events[column].value_counts().rename("n").reset_index()
            tops[column] = counts.sort_values(["n", column], ascending=[False, True])[column].head(top_n).tolist()
        mine = events[events[schema.CLIENT_ID].isin(ctx.client_ids)]
        columns = []
        for days in windows:
            recent = mine[mine[schema.TIMESTAMP] >= ctx.cutoff - timedelta(days=days)]
            columns.append(recent.groupby(schema.CLIENT_ID).size())
            for column, values in tops.items():
                columns += [recent[recent[column] == v].groupby(schema.CLIENT_ID).size() for v in values]
        block = [c.reindex(ctx.client_ids, fill_value=0).to_numpy(np.float64) for c in columns]
        if event_type == schema.SEARCH_QUERY:
            vectors = pd.DataFrame(np.stack(mine[schema.QUERY].to_numpy()).astype(np.float64), index=mine[schema.CLIENT_ID])
            means = vectors.groupby(level=0).mean().reindex(ctx.client_ids).fillna(0.0).to_numpy()
            block += list(means.T)
        blocks.append(np.column_stack(block))
    return np.concatenate(blocks, axis=1).astype(np.float32)


@pytest.mark.parametrize("windows,top_n,shift", [([1, 7, 30], 10, 0), ([3, 14], 4, 14)])
def test_same_bytes_as_the_definition(tiny_context, windows, top_n, shift):
    ctx = dataclasses.replace(tiny_context, client_ids=tiny_context.client_ids[::-1].copy(),
                              cutoff=tiny_context.cutoff - timedelta(days=shift), info={})
    got = aggregated.embed(ctx, {"windows": windows, "top_n": top_n, "threads": 1})
    expected = reference(ctx, windows, top_n)
    assert got.shape == expected.shape == (len(ctx.client_ids), expected.shape[1])
    assert got.dtype == np.float32 and got.tobytes() == expected.tobytes()
    assert (got[:, 0] > 0).any() and (got[:, -1] > 0).any()  # not all zeros: the reference can disagree


def test_top_values_count_every_client_not_only_the_relevant_ones(tiny_context):
    """Top values come from all input: restricting them to the relevant clients would change columns."""
    con_ctx = dataclasses.replace(tiny_context, info={})
    from ubp.db import connect

    with connect(threads=1) as con:
        top = aggregated._top_values(con, con_ctx, schema.PAGE_VISIT, 5)[schema.URL]
    visits = pd.read_parquet(tiny_context.events(schema.PAGE_VISIT))
    counts = visits[visits[schema.TIMESTAMP] < tiny_context.cutoff][schema.URL].value_counts().rename("n").reset_index()
    assert top == counts.sort_values(["n", schema.URL], ascending=[False, True])[schema.URL].head(5).tolist()


def test_memory_limit_comes_from_the_feature_settings(tiny_context):
    ctx = dataclasses.replace(tiny_context, feature_settings={"memory_limit": "64MB"}, info={})
    base = aggregated.embed(dataclasses.replace(tiny_context, info={}), {"windows": [7], "top_n": 3})
    assert np.array_equal(aggregated.embed(ctx, {"windows": [7], "top_n": 3}), base)
    with pytest.raises(UbpError, match="features.memory_limit"):
        aggregated.embed(dataclasses.replace(ctx, feature_settings={"memory_limit": "a lot"}), {"windows": [7]})
