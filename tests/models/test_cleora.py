"""cleora: hand-made hypergraph (svd's events: clients 1 and 2 twins, 3 and 5 in another world)."""
import dataclasses

import numpy as np
import pytest

from ubp import schema
from ubp.config import build
from ubp.io import UbpError
from ubp.models import cleora
from tests.models.test_svd import RELEVANT, write_events


def config(**over) -> cleora.Config:
    return build(cleora.Config, {"seed": 0, "dim": 16, "iterations": 3, "whiten": False, "min_clients": 1, "threads": 2,
                                 **over},
                 "models.cleora")


def row(client):
    return int(np.flatnonzero(RELEVANT == client)[0])


def cosine(x, a, b):
    return float(x[row(a)] @ x[row(b)])


@pytest.fixture
def ctx(tmp_path):
    return write_events(tmp_path / "events")


def test_twins_equal_a_stranger_not_and_rows_unit_or_zero(ctx):
    x = cleora.embed(ctx, config())
    assert x.shape == (len(RELEVANT), 16) and x.dtype == np.float32
    np.testing.assert_allclose(x[row(1)], x[row(2)], atol=1e-6)
    assert cosine(x, 1, 4) > cosine(x, 1, 3) + 0.1  # 4 shares most of 1's entities, 3 none
    assert cosine(x, 1, 3) < 0.9
    assert np.allclose(x[row(6)], 0)  # a silent client
    norms = np.linalg.norm(np.delete(x, row(6), axis=0), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_events_at_or_after_cutoff_change_nothing(tmp_path, ctx):
    late = [(schema.PRODUCT_BUY, 3, 10), (schema.PAGE_VISIT, 3, 100), (schema.PAGE_VISIT, 1, 200),
            (schema.SEARCH_QUERY, 5, [5] * 16)]
    with_late = write_events(tmp_path / "late", late=late)
    assert np.array_equal(cleora.embed(ctx, config()), cleora.embed(with_late, config()))


def test_deterministic_for_a_seed_and_the_seed_matters(ctx):
    a, b = cleora.embed(ctx, config()), cleora.embed(ctx, config(threads=1))
    assert np.array_equal(a, b)  # pycleora's workers do not change the bytes
    assert not np.array_equal(a, cleora.embed(ctx, config(seed=1)))


def test_whitened_and_one_kind(ctx):
    """(Whitening 16 dims over a graph of ~25 nodes only equalises them: checked for twins, not strangers.)"""
    x = cleora.embed(ctx, config(whiten=True, kinds=["url", "query"]))
    np.testing.assert_allclose(x[row(1)], x[row(2)], atol=1e-5)
    assert np.isfinite(x).all()


def test_settings_checked():
    with pytest.raises(UbpError, match="kinds"):
        config(kinds=["sku", "price"])
    with pytest.raises(UbpError, match="dim"):
        config(dim=0)
    assert dataclasses.replace(config(), dim=8).dim == 8
