"""Supervised stacking: labels from a window inside the input period, never the target windows.

The hand-made log of tests/features/conftest.py (cutoff 2022-08-01): with a 14-day shift the label
window is [07-18, 08-01). Client 1 buys sku 11 (cat 100) on 07-24 23:59:59 and sku 10 (cat 100) on
07-25, and bought before the window (07-02); client 99 buys sku 12 (cat 200) twice in it; client 3
buys only at and after the cutoff; clients 2 and 4 never buy.
"""
import dataclasses
from datetime import timedelta

import numpy as np
import pytest
import yaml

from ubp.combine import stacked
from ubp.features.build import FeaturesConfig
from ubp.io import UbpError
from ubp.models.base import EmbedContext
from tests.conftest import REPO
from tests.features.conftest import CUTOFF, D, write_log

CLIENTS = np.array([1, 2, 3, 4, 99], dtype=np.int64)
PARAMS_FILE = str(REPO / "params.yaml")


@pytest.fixture(scope="module")
def log_ctx(tmp_path_factory):
    events_dir, props = write_log(tmp_path_factory.mktemp("stacked_log"))
    return EmbedContext(client_ids=CLIENTS, events_dir=events_dir, properties_path=props, cutoff=CUTOFF)


def test_window_labels_by_hand(log_ctx):
    labels = stacked.window_labels(log_ctx, CUTOFF - 14 * D, 14, n_labels=100)
    assert labels.category_ids.tolist() == [100, 200]  # 2 purchases each: ties by id
    assert labels.sku_ids.tolist() == [12, 10, 11]
    assert labels.active.tolist() == [True, False, False, False, False]  # bought before 07-18
    assert labels.churn.tolist() == [0, 1, 1, 1, 0]  # client 3's purchases are at/after the cutoff
    assert labels.category.tolist() == [[1, 0], [0, 0], [0, 0], [0, 0], [0, 1]]
    assert labels.sku.tolist() == [[0, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]]


def test_label_window_never_reaches_the_cutoff(log_ctx):
    # A 20-day window from 07-18 would run past the cutoff: it is cut at the cutoff, so client 3's
    # purchase at exactly the cutoff stays unseen.
    labels = stacked.window_labels(log_ctx, CUTOFF - 14 * D, 20, n_labels=100)
    assert labels.churn.tolist() == [0, 1, 1, 1, 0] and 13 not in labels.sku_ids.tolist()
    top2 = stacked.window_labels(log_ctx, CUTOFF - 14 * D, 14, n_labels=2)
    assert top2.sku_ids.tolist() == [12, 10] and top2.sku.shape == (5, 2)


def test_settings_that_would_leak_are_refused():
    with pytest.raises(UbpError, match="must be >= window_days"):
        stacked.Config(shift_days=7, window_days=14)
    with pytest.raises(UbpError, match="source 'oracle' cannot be computed as of an earlier date"):
        stacked.check_as_of(stacked.Config(sources=("features", "oracle"), params_file=PARAMS_FILE))
    stacked.check_as_of(stacked.Config(sources=("features", "random"), params_file=PARAMS_FILE))


def test_a_source_is_refused_by_its_method_s_trait_not_its_name(tmp_path, monkeypatch):
    """`AS_OF` is read from the source's method module: a profile named anything, of method oracle,
    is refused; once the oracle module says AS_OF, it is accepted."""
    from ubp.models import oracle

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"embedding": {"seed": 0},
                                    "models": {"truth": {"method": "oracle", "inherits": "embedding"}}}))
    with pytest.raises(UbpError, match="source 'truth' cannot be computed"):
        stacked.check_as_of(stacked.Config(sources=("truth",), params_file=str(path)))
    monkeypatch.setattr(oracle, "AS_OF", True)
    stacked.check_as_of(stacked.Config(sources=("truth",), params_file=str(path)))


def test_training_fits_the_shifted_window_and_the_profile_reads_the_full_input(tiny_context):
    cfg = stacked.Config(sources=("aggregated",), hidden=32, dim=16, epochs=6, patience=6, batch_size=64, seed=0,
                         threads=1, params_file=PARAMS_FILE)
    ctx = dataclasses.replace(tiny_context, info={})
    z = stacked.embed(ctx, cfg)
    assert z.shape == (len(ctx.client_ids), 16) and np.isfinite(z).all()
    curve = ctx.info["curve"]
    assert min(r["val_loss"] for r in curve) < curve[0]["val_loss"]  # the heads learn the window's labels
    assert ctx.info["label_window_start"] == (ctx.cutoff - timedelta(days=14)).strftime("%Y-%m-%d %H:%M:%S")
    assert ctx.info["n_active"] > 0 and ctx.info["window_buyers"] > 0
    # The same network on the sources as of the shifted date gives other vectors: inference reads the full input.
    past = dataclasses.replace(ctx, cutoff=ctx.cutoff - timedelta(days=14), info={})
    x_past = stacked.source_matrix(past, cfg)
    x_now = stacked.source_matrix(ctx, cfg)
    assert x_past.shape == x_now.shape and not np.allclose(x_past, x_now)


def test_sources_as_of_the_shifted_date_compute_their_features(monkeypatch, log_ctx, tmp_path):
    """The stored features table is as of the cutoff: the shifted sources leave it (load_or_build would
    refuse it) and compute theirs with the same params features: settings; the final sources keep it."""
    seen = []

    def sources(ctx, s):
        seen.append(ctx)
        return np.random.default_rng(0).standard_normal((len(ctx.client_ids), 3)).astype(np.float32)

    monkeypatch.setattr(stacked, "source_matrix", sources)
    ctx = dataclasses.replace(log_ctx, features_path=tmp_path / "features.parquet",
                              feature_settings=FeaturesConfig(windows=(7,)), info={})
    stacked.embed(ctx, stacked.Config(sources=("aggregated",), hidden=4, dim=2, epochs=1, threads=1,
                                      params_file=PARAMS_FILE))
    assert [c.cutoff for c in seen] == [CUTOFF - 14 * D, CUTOFF]
    assert seen[0].features_path is None and seen[1].features_path == ctx.features_path
    assert all(c.feature_settings == FeaturesConfig(windows=(7,)) for c in seen)
