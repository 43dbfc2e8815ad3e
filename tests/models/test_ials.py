"""ials: a planted low-rank interaction matrix, and svd's hand-made events (1 and 2 twins)."""
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from ubp import schema
from ubp.config import build
from ubp.io import UbpError
from ubp.models import ials
from tests.models.test_svd import RELEVANT, write_events


def config(**over) -> ials.Config:
    base = {"seed": 0, "factors": {"category": 2, "url": 4}, "min_clients": 1, "iterations": 10, "threads": 2}
    return build(ials.Config, {**base, **over}, "models.ials")


def row(client):
    return int(np.flatnonzero(RELEVANT == client)[0])


def planted(seed=0, clients=60, items=30, groups=3, density=0.6):
    """Clients of group g touch a random `density` share of group g's items only (rank `groups`)."""
    rng = np.random.default_rng(seed)
    group_of_client, group_of_item = np.arange(clients) % groups, np.arange(items) % groups
    same = group_of_client[:, None] == group_of_item[None, :]
    observed = same & (rng.random((clients, items)) < density)
    return same, observed


def test_reconstructs_a_planted_low_rank_matrix():
    same, observed = planted()
    users, items = ials.factorize(sp.csr_matrix(observed.astype(np.float32)), 3, config(), with_items=True)
    scores = users @ items.T
    unseen = ~observed  # held out: in-group cells never observed, and every out-of-group cell
    assert roc_auc_score(same[unseen], scores[unseen]) > 0.95


def test_deterministic_with_threads_and_the_seed_matters():
    _, observed = planted(1)
    x = sp.csr_matrix(observed.astype(np.float32))
    a = ials.factorize(x, 4, config(threads=2))
    assert np.array_equal(a, ials.factorize(x, 4, config(threads=2)))
    assert np.array_equal(a, ials.factorize(x, 4, config(threads=1)))
    assert not np.array_equal(a, ials.factorize(x, 4, config(seed=1)))


def test_twins_equal_a_stranger_not_blocks_unit_norm(tmp_path):
    ctx = write_events(tmp_path / "events")
    x = ials.embed(ctx, config())
    assert x.shape == (len(RELEVANT), 6)
    np.testing.assert_allclose(x[row(1)], x[row(2)], atol=1e-5)
    cat, url = x[:, :2], x[:, 2:]
    assert url[row(1)] @ url[row(3)] < url[row(1)] @ url[row(4)] - 0.2
    assert np.allclose(x[row(6)], 0)  # silent
    for block in (cat, url):
        active = np.linalg.norm(block, axis=1) > 0
        np.testing.assert_allclose(np.linalg.norm(block[active], axis=1), 1.0, atol=1e-5)


def test_events_at_or_after_cutoff_change_nothing(tmp_path):
    late = [(schema.PRODUCT_BUY, 3, 10), (schema.ADD_TO_CART, 1, 20), (schema.PAGE_VISIT, 3, 100)]
    early, with_late = write_events(tmp_path / "a"), write_events(tmp_path / "b", late=late)
    assert np.array_equal(ials.embed(early, config()), ials.embed(with_late, config()))


def test_a_zero_factor_block_is_dropped_and_settings_checked(tmp_path):
    ctx = write_events(tmp_path / "events")
    assert ials.embed(ctx, config(factors={"category": 0, "url": 3})).shape == (len(RELEVANT), 3)
    with pytest.raises(UbpError, match="factors"):
        config(factors={"category": 0, "url": 0})
    with pytest.raises(UbpError, match="alpha"):
        config(alpha=0)
