"""svd: hand-made events with a known answer, plus the shared contract on the tiny generated data."""
import dataclasses
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from ubp import schema
from ubp.config import as_dict, build
from ubp.embed import compute
from ubp.io import UbpError
from ubp.models import svd
from ubp.models.base import EmbedContext

CUTOFF = datetime(2022, 8, 1)
BEFORE = CUTOFF - timedelta(days=3)
DIMS = {"sku": 4, "category": 2, "price": 2, "url": 4, "query": 3}
# client -> (skus bought, skus added, urls visited, query first codes); 1 = 2 (twins), 3 disjoint from 1
BEHAVIOUR = {
    1: ([10, 11], [12], [100, 101], [5]),
    2: ([10, 11], [12], [100, 101], [5]),
    3: ([20, 21], [22], [200, 201], [9]),
    4: ([10, 12], [11], [100, 102], [5]),
    5: ([20, 22], [21], [200, 202], [9]),
    6: ([], [], [], []),  # relevant but silent
}
RELEVANT = np.array([3, 1, 6, 2, 4, 5], dtype=np.int64)
OTHERS = {7: ([10, 21], [], [101, 201], [5]), 8: ([11, 20], [12], [102, 202], [9])}


def _table(rows, column, values_type):
    return pa.table({schema.CLIENT_ID: pa.array([r[0] for r in rows], pa.int64()),
                     schema.TIMESTAMP: pa.array([r[1] for r in rows], pa.timestamp("us")),
                     column: pa.array([r[2] for r in rows], values_type)})


def write_events(root, late=(), others=OTHERS):
    """Canonical parquet files for BEHAVIOUR + others; `late` = extra (event, client, value) at the cutoff."""
    events = {t: [] for t in schema.EVENT_TYPES}
    for client, (bought, added, urls, queries) in {**BEHAVIOUR, **others}.items():
        events[schema.PRODUCT_BUY] += [(client, BEFORE, s) for s in bought]
        events[schema.ADD_TO_CART] += [(client, BEFORE, s) for s in added + bought]
        events[schema.PAGE_VISIT] += [(client, BEFORE, u) for u in urls]
        events[schema.SEARCH_QUERY] += [(client, BEFORE, [q] * 16) for q in queries]
    events[schema.REMOVE_FROM_CART] += [(1, BEFORE, 12), (2, BEFORE, 12)]
    for event_type, client, value in late:
        events[event_type].append((client, CUTOFF + timedelta(seconds=60 * len(events[event_type])), value))
    root.mkdir(parents=True, exist_ok=True)
    for event_type, rows in events.items():
        column = schema.EVENT_VALUE_COLUMN[event_type]
        kind = pa.list_(pa.uint8(), 16) if column == schema.QUERY else pa.int64()
        pq.write_table(_table(rows, column, kind), root / f"{event_type}.parquet")
    skus = [10, 11, 12, 20, 21, 22]
    pq.write_table(pa.table({schema.SKU: pa.array(skus, pa.int64()),
                             schema.CATEGORY: pa.array([s // 10 for s in skus], pa.int64()),
                             schema.PRICE: pa.array(skus, pa.int64()),
                             schema.NAME: pa.array([[s] * 16 for s in skus], pa.list_(pa.uint8(), 16))}),
                   root / "product_properties.parquet")
    return EmbedContext(client_ids=RELEVANT, events_dir=root, properties_path=root / "product_properties.parquet",
                        cutoff=CUTOFF)


def blocks(matrix):
    out, start = {}, 0
    dims = DIMS if matrix.shape[1] == sum(DIMS.values()) + len(schema.EVENT_TYPES) else \
        {"sku": 6, "category": 2, "price": 6, "url": 6, "query": 2}
    for name, dim in dims.items():
        out[name] = matrix[:, start:start + dim]
        start += dim
    out["activity"] = matrix[:, start:]
    return out


@pytest.fixture
def ctx(tmp_path):
    return write_events(tmp_path / "events")


def config(**over) -> svd.Config:
    return build(svd.Config, {"seed": 0, "dims": DIMS, "min_df": 1, **over}, "models.svd")


@pytest.fixture
def cfg():
    return config()


def row(client):
    return int(np.flatnonzero(RELEVANT == client)[0])


def test_shape_and_twins(ctx, cfg):
    m = svd.embed(ctx, cfg)
    assert m.dtype == np.float32 and m.shape == (len(RELEVANT), sum(DIMS.values()) + len(schema.EVENT_TYPES))
    np.testing.assert_array_equal(m[row(1)], m[row(2)])
    assert not np.array_equal(m[row(1)], m[row(4)])


def test_disjoint_clients_are_orthogonal_and_blocks_unit_norm(ctx, cfg):
    full = {"sku": 6, "category": 2, "price": 6, "url": 6, "query": 2}  # every item's direction kept
    for name, b in blocks(svd.embed(ctx, config(dims=full))).items():
        if name != "activity":
            assert abs(float(b[row(1)] @ b[row(3)])) < 1e-5, name
    for name, b in blocks(svd.embed(ctx, cfg)).items():
        if name == "activity":
            continue
        assert abs(float(b[row(1)] @ b[row(3)])) < 0.1, name  # truncation mixes them only a little
        np.testing.assert_allclose(np.linalg.norm(b[row(1)]), 1.0, rtol=1e-5)
        assert float(b[row(1)] @ b[row(4)]) > 0.3, name  # overlapping behaviour (half the items) points alike


def test_silent_client_gets_zero_row(ctx, cfg):
    m = svd.embed(ctx, cfg)
    assert not m[row(6)].any()
    assert m[[row(c) for c in (1, 2, 3, 4, 5)]].any(axis=1).all()


def test_events_at_or_after_cutoff_are_ignored(tmp_path, ctx, cfg):
    late = [(schema.PRODUCT_BUY, 1, 20), (schema.PAGE_VISIT, 3, 100), (schema.PAGE_VISIT, 6, 999),
            (schema.ADD_TO_CART, 6, 10), (schema.SEARCH_QUERY, 1, [9] * 16), (schema.PRODUCT_BUY, 9, 21)]
    with_late = write_events(tmp_path / "late", late)
    np.testing.assert_array_equal(svd.embed(ctx, cfg), svd.embed(with_late, cfg))


def test_fit_on_relevant_fits_the_factors_on_the_relevant_clients_only(tmp_path, ctx, cfg):
    """`fit_on: relevant` gives exactly the profile of a log without the other clients (7 and 8),
    which `fit_on: all` uses (they add co-occurrences, e.g. sku 10 with 21): so the two differ."""
    np.testing.assert_array_equal(svd.embed(ctx, cfg), svd.embed(ctx, cfg))
    only = svd.embed(ctx, config(fit_on="relevant"))
    alone = write_events(tmp_path / "alone", others={})
    np.testing.assert_array_equal(only, svd.embed(alone, cfg))
    assert not np.allclose(only, svd.embed(ctx, cfg), atol=1e-3)
    capped = config(max_fit_clients=len(RELEVANT))  # no room for others: the same as relevant only
    np.testing.assert_array_equal(only, svd.embed(ctx, capped))
    with pytest.raises(UbpError, match="models.svd.fit_on must be one of 'all', 'relevant'"):
        config(fit_on="everyone")


def test_more_components_than_items_is_zero_padded(ctx, cfg):
    big = {"sku": 50, "category": 10, "price": 0, "url": 40, "query": 5000}
    m = svd.embed(ctx, config(dims=big, activity=False, exact_max_cols=0))
    assert m.shape == (len(RELEVANT), 50 + 10 + 40 + 5000)
    sku = m[:, :50]
    assert not sku[:, 6:].any()  # 6 skus: at most 6 components
    np.testing.assert_array_equal(m[row(1)], m[row(2)])


def test_sign_convention_largest_loading_positive(ctx, cfg):
    rng = np.random.default_rng(0)
    dense = rng.random((30, 8)) * (rng.random((30, 8)) < 0.4)
    for exact in (100, 0):
        v, s = svd.item_factors(sp.csr_matrix(dense, dtype=np.float32), 3, svd.Config(exact_max_cols=exact))
        assert v.shape == (8, 3) and np.all(np.diff(s) <= 1e-4)
        assert np.all(v[np.abs(v).argmax(axis=0), np.arange(3)] > 0)
        np.testing.assert_allclose(s, np.linalg.svd(dense, compute_uv=False)[:3], rtol=1e-3)


def test_defaults_only(ctx):
    m = svd.embed(ctx, svd.Config())
    assert m.shape == (len(RELEVANT), sum(as_dict(svd.Config().dims).values()) + len(schema.EVENT_TYPES))
    assert np.isfinite(m).all()


def test_a_partial_dims_mapping_keeps_the_other_blocks_and_a_typo_is_refused(ctx):
    assert svd.embed(ctx, config(dims={"url": 0})).shape[1] == 64 + 32 + 16 + 16 + len(schema.EVENT_TYPES)
    with pytest.raises(UbpError, match=r"unknown key 'models.svd.dims.skus'; did you mean 'sku'"):
        config(dims={"skus": 4})
    with pytest.raises(UbpError, match="unknown key 'models.svd.weights.buy'"):
        config(weights={"buy": 4.0})


def test_blocks_and_weights_are_named_as_the_code_reads_them():
    assert [f.name for f in dataclasses.fields(svd.Dims)] == list(svd.BLOCKS)
    assert [f.name for f in dataclasses.fields(svd.Weights)] == list(schema.EVENT_TYPES)


def test_contract_on_tiny_data(tiny_context):
    cfg = svd.Config()
    first = compute("svd", cfg, tiny_context)
    assert first.dtype == np.float16 and first.shape[0] == len(tiny_context.client_ids)
    assert np.isfinite(first).all() and first.any(axis=1).mean() > 0.5
    np.testing.assert_array_equal(first, compute("svd", cfg, tiny_context))
