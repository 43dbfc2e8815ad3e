"""rcae: the architecture seed 000 specifies, training on a hand-made matrix, the profile on tiny data."""
import dataclasses
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from torch import nn

from ubp import schema
from ubp.embed import compute
from ubp.features.build import FeaturesConfig, write_table
from ubp.features.table import load_or_build
from ubp.models import rcae
from ubp.models.base import EmbedContext
from ubp.params import model_config
from tests.models.test_models import PARAMS, bought, probe_auc  # noqa: F401  (bought is a fixture)

FAST = {"epochs": 6, "threads": 1, "batch_size": 128}


@pytest.fixture(scope="module")
def features_context(tiny_context, tmp_path_factory):
    """tiny_context with its feature table built once and stored, so each run skips the build."""
    out = tmp_path_factory.mktemp("features")
    write_table(out, load_or_build(tiny_context), tiny_context.cutoff, FeaturesConfig())
    return dataclasses.replace(tiny_context, features_path=out / "features.parquet", info={})


def low_rank(n=256, d=24, rank=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d)) + 0.1 * rng.standard_normal((n, d))
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


def test_architecture_follows_the_paper():
    model = rcae.RCAE(30, list(rcae.Config().widths), rcae.Config().latent)
    blocks = list(model.encoder)
    assert [b.linear.out_features for b in blocks] == [512, 256, 128, 64]
    assert all(isinstance(b.norm, nn.BatchNorm1d) and isinstance(b.act, nn.GELU) for b in blocks)
    assert all(isinstance(b.skip, nn.Linear) for b in blocks), "widths differ: projected residual skips"
    assert model.to_latent.out_features == 64
    assert [b.linear.out_features for b in list(model.decoder)[:-1]] == [64, 128, 256, 512]
    assert model.decoder[-1].out_features == 30
    same = rcae.ResidualBlock(8, 8)
    assert isinstance(same.skip, nn.Identity)
    assert rcae.RCAE(30, [16], 8).to_latent.out_features == 8


def test_noise_is_annealed_linearly_from_010_to_002():
    sigmas = [rcae.noise_sigma(e, 5, 0.10, 0.02) for e in range(5)]
    assert sigmas[0] == pytest.approx(0.10) and sigmas[-1] == pytest.approx(0.02)
    np.testing.assert_allclose(np.diff(sigmas), -0.02, atol=1e-12)


def test_training_views_carry_the_annealed_noise(monkeypatch):
    """The noise the training views get, measured: sigma 0.10 at the first epoch down to 0.02 at the
    last (the seed's curriculum), and the validation views at 0.02 throughout."""
    seen = []
    loss = rcae.rcae_loss

    def spy(model, clean, view_a, view_b, cfg):
        seen.append((model.training, float((view_a - clean).std()), float((view_b - clean).std())))
        return loss(model, clean, view_a, view_b, cfg)

    monkeypatch.setattr(rcae, "rcae_loss", spy)
    rcae.train(low_rank(n=512), rcae.Config(epochs=5, patience=5, threads=1, batch_size=512, latent=4, widths=(8,)))
    train = [a for training, a, _ in seen if training]
    assert len(train) == 5  # one batch of the 461 training rows per epoch
    np.testing.assert_allclose(train, [0.10, 0.08, 0.06, 0.04, 0.02], rtol=0.05)
    val = [v for training, a, b in seen if not training for v in (a, b)]
    np.testing.assert_allclose(val, 0.02, rtol=0.1)


def test_loss_decreases_on_a_low_rank_matrix():
    info = {}
    rcae.train(low_rank(), rcae.Config(epochs=8, patience=8, threads=1, batch_size=64, latent=8, widths=(64, 32, 16)),
               info)
    curve = info["curve"]
    assert len(curve) == 8 and info["n_val"] == 26 and info["n_train"] == 230
    assert curve[-1]["train_loss"] < 0.7 * curve[0]["train_loss"]
    assert curve[-1]["val_loss"] < curve[0]["val_loss"]


def stub_context(tmp_path, n=20, d=12, outlier=7):
    """Features already built (only client ids and features_path are read); client `outlier` stands out."""
    x = low_rank(n=n, d=d)
    x[outlier] = 10.0
    table = pd.DataFrame(x, columns=[f"f{i}" for i in range(d)])
    table.insert(0, schema.CLIENT_ID, np.arange(n, dtype=np.int64))
    write_table(tmp_path / "features", table, datetime(2022, 8, 1), FeaturesConfig())
    return EmbedContext(client_ids=np.random.default_rng(1).permutation(n).astype(np.int64), events_dir=tmp_path,
                        properties_path=tmp_path / "none.parquet", cutoff=datetime(2022, 8, 1),
                        features_path=tmp_path / "features" / "features.parquet")


def test_defaults_work_and_rows_follow_client_ids(tmp_path):
    ctx = stub_context(tmp_path)
    out = rcae.embed(ctx, rcae.Config(seed=0, epochs=2, threads=1))
    assert out.shape == (20, rcae.Config().latent) and out.dtype == np.float32
    assert [row["epoch"] for row in ctx.info["curve"]] == [1, 2]
    far = np.linalg.norm(out - np.median(out, axis=0), axis=1).argmax()
    assert ctx.client_ids[far] == 7


@pytest.fixture(scope="module")
def profiles(features_context):
    run = lambda seed: rcae.embed(dataclasses.replace(features_context, info={}), rcae.Config(**FAST, seed=seed))
    return run(0), run(0), run(1)


def test_profile_shape_finite_deterministic(profiles, features_context):
    first, again, other_seed = profiles
    assert first.dtype == np.float32 and first.shape == (len(features_context.client_ids), 64)
    assert np.isfinite(first).all() and np.abs(first).max() < 1e3
    assert np.array_equal(first, again), "same cfg, same bytes"
    assert not np.allclose(first, other_seed)


def test_profile_beats_noise_on_the_planted_signal(profiles, features_context, bought):  # noqa: F811
    noise = compute("random", model_config(PARAMS, "random"), features_context)
    ours, floor = probe_auc(profiles[0], bought), probe_auc(noise, bought)
    assert ours > floor + 0.05, f"rcae probe AUROC {ours:.3f} vs noise {floor:.3f}"
