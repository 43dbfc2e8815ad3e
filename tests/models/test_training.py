"""_training: early stopping, the recorded curve, seeding, the held-out split, batches, InfoNCE."""
import numpy as np
import pytest
import torch
from torch import nn

from ubp.io import UbpError
from ubp.models import _training as T


def scripted_fit(val_losses, patience, epochs=None):
    """fit on a one-weight model whose weight becomes the epoch number; val loss follows the script."""
    model = nn.Linear(1, 1, bias=False)

    def train_epoch(epoch):
        with torch.no_grad():
            model.weight.fill_(float(epoch + 1))
        return 10.0 - epoch

    info = {}
    result = T.fit(model, train_epoch, lambda epoch: val_losses[epoch], epochs or len(val_losses), patience, info)
    return model, result, info


def test_early_stopping_stops_after_patience_and_restores_best():
    model, result, info = scripted_fit([5.0, 3.0, 2.0, 2.5, 2.1, 2.0, 1.0, 0.5], patience=3)
    assert result.best_epoch == 3 and result.best_loss == 2.0  # a tie (epoch 6) is no improvement
    assert result.epochs_run == 6 and result.stopped_early
    assert model.weight.item() == 3.0, "the best epoch's weights are restored"
    assert not model.training


def test_curve_recorded_per_epoch():
    _, result, info = scripted_fit([3.0, 2.0, 1.0], patience=5)
    curve = info["curve"]
    assert [row["epoch"] for row in curve] == [1, 2, 3]
    assert [row["train_loss"] for row in curve] == [10.0, 9.0, 8.0]
    assert [row["val_loss"] for row in curve] == [3.0, 2.0, 1.0]
    assert all(row["seconds"] >= 0 for row in curve)
    assert info["best_epoch"] == 3 and info["epochs_run"] == 3 and not result.stopped_early


def test_without_validation_selects_on_train_loss():
    model = nn.Linear(1, 1, bias=False)
    losses = [3.0, 1.0, 2.0, 4.0]

    def train_epoch(epoch):
        with torch.no_grad():
            model.weight.fill_(float(epoch + 1))
        return losses[epoch]

    info = {}
    result = T.fit(model, train_epoch, None, 4, 2, info)
    assert result.best_epoch == 2 and model.weight.item() == 2.0
    assert info["curve"][0]["val_loss"] == ""


def test_non_finite_loss_is_an_error():
    with pytest.raises(UbpError, match="loss became"):
        scripted_fit([1.0, float("nan")], patience=3)


def test_seeding_makes_runs_identical():
    def run(seed):
        rng = T.seed_everything(seed)
        net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.GELU(), nn.Linear(8, 2))
        weights = torch.cat([p.detach().flatten() for p in net.parameters()]).numpy()
        return weights, torch.randn(3).numpy(), rng.random(3)

    first, again, other = run(5), run(5), run(6)
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_holdout_split_deterministic_and_disjoint():
    train, val = T.holdout_split(1000, 0.1, seed=3)
    assert len(val) == 100 and len(train) == 900
    assert not set(train) & set(val) and set(train) | set(val) == set(range(1000))
    again = T.holdout_split(1000, 0.1, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, T.holdout_split(1000, 0.1, seed=4)[1])
    assert len(T.holdout_split(1000, 0.0, seed=3)[1]) == 0
    assert len(T.holdout_split(10, 0.01, seed=3)[1]) == 1  # at least one held-out client
    assert len(T.holdout_split(3, 0.5, seed=3)[1]) == 0  # too few to hold any out


def test_batches_cover_everything_and_never_leave_a_single_row():
    rng = np.random.default_rng(0)
    parts = T.batches(np.arange(11), 5, rng)
    assert [len(p) for p in parts] == [5, 6]
    assert sorted(np.concatenate(parts).tolist()) == list(range(11))
    assert [p.tolist() for p in T.batches(np.arange(6), 4)] == [[0, 1, 2, 3], [4, 5]]


def test_predict_in_batches_matches_one_pass():
    x = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    net = nn.Linear(3, 2)
    out = T.predict(net, x, batch_size=3)
    assert out.dtype == np.float32 and out.shape == (10, 2)
    np.testing.assert_allclose(out, net(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-6)


def test_info_nce_prefers_matching_pairs():
    a = torch.eye(4)
    assert T.info_nce(a, a, 0.1) < T.info_nce(a, a.roll(1, dims=0), 0.1)
    assert T.info_nce(a, a, 0.1).item() == pytest.approx(np.log(1 + 3 * np.exp(-10)), abs=1e-6)


def test_unavailable_device_is_a_clear_error():
    assert T.resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(UbpError, match="CUDA"):
            T.resolve_device("cuda")
