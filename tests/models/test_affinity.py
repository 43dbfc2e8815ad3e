"""affinity: hand-made events on two target SKUs and two target categories, checked by hand."""
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ubp import schema
from ubp.config import build
from ubp.io import UbpError
from ubp.models import affinity
from ubp.models.base import EmbedContext

CUTOFF = datetime(2022, 8, 1)
CLIENTS = np.array([3, 1, 2], dtype=np.int64)  # rows follow this order
TARGET_SKUS = np.array([20, 10], dtype=np.int64)  # label 0 = sku 20, label 1 = sku 10
TARGET_CATEGORIES = np.array([1, 2], dtype=np.int64)  # category = sku // 10
HALF_LIFE = 14
ALL_STATS = affinity.Config(stats=affinity.STATS)  # buy, add, recent per label


def config(**over) -> affinity.Config:
    return build(affinity.Config, over, "models.affinity")


def write(root, events):
    """events: {event type: [(client, days before the cutoff, sku)]} (negative days: after the cutoff)."""
    root.mkdir(parents=True, exist_ok=True)
    for event_type in schema.EVENT_TYPES:
        rows = events.get(event_type, [])
        column = schema.EVENT_VALUE_COLUMN[event_type]
        kind = pa.list_(pa.uint8(), 16) if column == schema.QUERY else pa.int64()
        pq.write_table(pa.table({
            schema.CLIENT_ID: pa.array([r[0] for r in rows], pa.int64()),
            schema.TIMESTAMP: pa.array([CUTOFF - timedelta(days=r[1]) for r in rows], pa.timestamp("us")),
            column: pa.array([r[2] for r in rows], kind)}), root / f"{event_type}.parquet")
    skus = [10, 11, 20, 21, 30]
    pq.write_table(pa.table({schema.SKU: pa.array(skus, pa.int64()),
                             schema.CATEGORY: pa.array([s // 10 for s in skus], pa.int64()),
                             schema.PRICE: pa.array(skus, pa.int64()),
                             schema.NAME: pa.array([[1] * 16 for _ in skus], pa.list_(pa.uint8(), 16))}),
                   root / "product_properties.parquet")
    targets = root / "targets"
    targets.mkdir()
    np.save(targets / f"{schema.PROPENSITY_SKU}.npy", TARGET_SKUS)
    np.save(targets / f"{schema.PROPENSITY_CATEGORY}.npy", TARGET_CATEGORIES)
    return EmbedContext(client_ids=CLIENTS, events_dir=root, properties_path=root / "product_properties.parquet",
                        cutoff=CUTOFF, targets_dir=targets)


EVENTS = {
    schema.PRODUCT_BUY: [(1, 3, 10), (1, 3, 10), (3, 0, 10), (2, 5, 30)],  # client 3 buys AT the cutoff: unseen
    schema.ADD_TO_CART: [(1, 3, 10), (2, 14, 21)],
    schema.REMOVE_FROM_CART: [(2, 28, 11)],
}


@pytest.fixture
def ctx(tmp_path):
    return write(tmp_path / "events", EVENTS)


def test_counts_and_recency_by_hand(ctx):
    x = affinity.embed(ctx, config(half_life_days=HALF_LIFE, stats=list(affinity.STATS)))
    assert x.shape == (3, 2 * 2 * 3) and x.dtype == np.float32
    sku = x[:, :6].reshape(3, 2, 3)  # (client row, label, buy/add/recent)
    cat = x[:, 6:].reshape(3, 2, 3)
    decay = lambda days: 0.5 ** (days / HALF_LIFE)
    # row 1 = client 1: two buys and one add of sku 10 (label 1), 3 days before the cutoff
    np.testing.assert_allclose(sku[1, 1], np.log1p([2, 1, 3 * decay(3)]), rtol=1e-5)
    np.testing.assert_allclose(cat[1, 0], np.log1p([2, 1, 3 * decay(3)]), rtol=1e-5)  # category 1
    assert not sku[1, 0].any() and not cat[1, 1].any()
    # row 2 = client 2: sku 21 (category 2, not a target sku) added 14 days ago, sku 11 removed 28 days ago
    # (category 1), sku 30 bought (category 3, not a target): no sku column, two category columns
    assert not sku[2].any()
    np.testing.assert_allclose(cat[2, 1], np.log1p([0, 1, decay(14)]), rtol=1e-5)
    np.testing.assert_allclose(cat[2, 0], np.log1p([0, 0, decay(28)]), rtol=1e-5)
    # row 0 = client 3: its only purchase is at the cutoff itself
    assert not x[0].any()


def test_later_events_change_nothing(tmp_path, ctx):
    late = {k: list(v) for k, v in EVENTS.items()}
    late[schema.PRODUCT_BUY] += [(2, -1, 20), (1, 0, 20)]
    late[schema.ADD_TO_CART] += [(3, -2, 10)]
    other = write(tmp_path / "late", late)
    np.testing.assert_array_equal(affinity.embed(ctx, ALL_STATS), affinity.embed(other, ALL_STATS))


def test_only_open_tasks_and_valid_label_sets(ctx):
    with pytest.raises(UbpError, match="only the open propensity tasks.*propensity_new_sku"):
        config(tasks=[schema.PROPENSITY_SKU, schema.PROPENSITY_NEW_SKU])
    with pytest.raises(UbpError, match="half_life_days"):
        config(half_life_days=0)
    assert affinity.embed(ctx, config(tasks=[schema.PROPENSITY_CATEGORY], stats=list(affinity.STATS))).shape == (3, 6)
    recent = affinity.embed(ctx, config())  # params.yaml's (and the default) stats: recent only
    np.testing.assert_array_equal(recent, affinity.embed(ctx, ALL_STATS)[:, 2::3])
    with pytest.raises(UbpError, match="affinity.stats"):
        config(stats=["buys"])
    np.save(ctx.targets_dir / f"{schema.PROPENSITY_SKU}.npy", np.array([10, 20, 10]))
    with pytest.raises(UbpError, match="propensity_sku.npy: duplicate sku ids"):
        affinity.embed(ctx, config())
    np.save(ctx.targets_dir / f"{schema.PROPENSITY_SKU}.npy", np.array([1.5, 2.0]))
    with pytest.raises(UbpError, match="propensity_sku.npy: expected a 1-D integer array"):
        affinity.embed(ctx, config())
    (ctx.targets_dir / f"{schema.PROPENSITY_SKU}.npy").unlink()
    with pytest.raises(UbpError, match="propensity_sku.npy: file not found"):
        affinity.embed(ctx, config())
