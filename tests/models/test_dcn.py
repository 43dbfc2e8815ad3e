"""dcn: DCN-v2 cross layers, the contrastive training on a hand-made matrix, the profile on tiny data."""
import dataclasses

import numpy as np
import pytest
import torch

from ubp.config import build
from ubp.embed import compute
from ubp.io import UbpError
from ubp.models import dcn
from ubp.params import model_config
from tests.models.test_models import PARAMS, bought, probe_auc  # noqa: F401  (bought is a fixture)
from tests.models.test_rcae import features_context, low_rank, stub_context  # noqa: F401  (a fixture)

FAST = {"epochs": 6, "threads": 1, "batch_size": 128}


def test_cross_layer_is_dcn_v2():
    torch.manual_seed(0)
    layer = dcn.CrossLayer(5)
    x0, x = torch.randn(3, 5), torch.randn(3, 5)
    expected = x0 * (x @ layer.linear.weight.T + layer.linear.bias) + x
    torch.testing.assert_close(layer(x0, x), expected)


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_profile_width_is_hidden_or_dim(structure):
    x = torch.randn(4, 10)
    model = dcn.DCN(10, dcn.Config(hidden=512).width, 3, 2, 128, structure).eval()
    assert len(model.cross) == 3
    assert model.represent(x).shape == (4, 512) and model(x).shape == (4, 128)
    assert dcn.Config(hidden=256, dim=96).width == 96


def test_model_hidden_sets_the_profile_width(tmp_path):
    """What the graph runs is what params.yaml says: `model.hidden` (there is no other default)."""
    ctx = stub_context(tmp_path)
    for hidden in (PARAMS["model"]["hidden"], 48):
        params = {**PARAMS, "model": {**PARAMS["model"], "hidden": hidden, "epochs": 1, "threads": 1}}
        assert dcn.embed(dataclasses.replace(ctx, info={}), model_config(params, "dcn")).shape == (20, hidden)


def test_unknown_structure_is_an_error():
    with pytest.raises(ValueError, match="stacked"):
        dcn.DCN(10, 8, 1, 1, 4, "sideways")
    with pytest.raises(UbpError, match="models.dcn.structure must be one of 'stacked', 'parallel'"):
        build(dcn.Config, {"structure": "sideways"}, "models.dcn")


def test_augment_masks_and_adds_noise():
    x = torch.ones(2000, 10)
    masked = dcn.augment(x, mask_rate=0.3, noise=0.0, generator=torch.Generator().manual_seed(0))
    assert set(masked.unique().tolist()) == {0.0, 1.0} and abs((masked == 0).float().mean().item() - 0.3) < 0.02
    noisy = dcn.augment(x, mask_rate=0.0, noise=0.1, generator=torch.Generator().manual_seed(0))
    assert abs((noisy - x).std().item() - 0.1) < 0.005


def test_loss_decreases_on_a_low_rank_matrix():
    info = {}
    dcn.train(low_rank(), dcn.Config(epochs=8, patience=8, threads=1, batch_size=64, hidden=32, projection=16), info)
    curve = info["curve"]
    assert len(curve) == 8 and info["n_val"] == 26
    assert curve[-1]["train_loss"] < 0.8 * curve[0]["train_loss"]
    assert curve[-1]["val_loss"] < curve[0]["val_loss"]


def test_defaults_work_and_rows_follow_client_ids(tmp_path):
    ctx = stub_context(tmp_path)
    out = dcn.embed(ctx, dcn.Config(seed=0, epochs=2, threads=1))
    assert out.shape == (20, dcn.Config().hidden) and out.dtype == np.float32
    assert [row["epoch"] for row in ctx.info["curve"]] == [1, 2]
    far = np.linalg.norm(out - np.median(out, axis=0), axis=1).argmax()
    assert ctx.client_ids[far] == 7


@pytest.fixture(scope="module")
def profiles(features_context):  # noqa: F811
    run = lambda seed: dcn.embed(dataclasses.replace(features_context, info={}), dcn.Config(**FAST, seed=seed))
    return run(0), run(0), run(1)


def test_profile_shape_finite_deterministic(profiles, features_context):  # noqa: F811
    first, again, other_seed = profiles
    assert first.dtype == np.float32 and first.shape == (len(features_context.client_ids), dcn.Config().hidden)
    assert np.isfinite(first).all() and np.abs(first).max() < 1e3
    assert np.array_equal(first, again), "same cfg, same bytes"
    assert not np.allclose(first, other_seed)


def test_profile_beats_noise_on_the_planted_signal(profiles, features_context, bought):  # noqa: F811
    noise = compute("random", model_config(PARAMS, "random"), features_context)
    ours, floor = probe_auc(profiles[0], bought), probe_auc(noise, bought)
    assert ours > floor + 0.05, f"dcn probe AUROC {ours:.3f} vs noise {floor:.3f}"
