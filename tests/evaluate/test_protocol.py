"""The downstream protocol on planted data: it learns a real signal, not noise, and is deterministic."""
import numpy as np
import pytest
import torch
from torch import nn

from ubp.evaluate.protocol import ProtocolConfig, align, build_net, evaluate_task
from ubp.io import UbpError

TINY = ProtocolConfig(thin=32, wide=64, threads=2)


def planted(n=1500, d=16, n_labels=1, signal=True, seed=0):
    """Embeddings and labels that are a noisy linear function of them (or pure noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float16)
    w = rng.normal(size=(d, n_labels))

    def labels():
        z = (x.astype(np.float64) @ w if signal else 0) + rng.normal(size=(n, n_labels)) * 1.0
        return (z > 1.0).astype(np.uint8)

    return x, labels(), labels()


def test_learns_a_planted_binary_signal():
    x, y_train, y_val = planted()
    out = evaluate_task("churn", x, y_train, y_val, config=TINY)
    assert out["score"] > 0.85
    assert out["n_clients"] == 1500 and out["n_labels"] == 1 and out["labels_without_positive"] == 0
    assert len(out["per_epoch"]) == 3 and out["best_epoch"] in (0, 1, 2)


def test_learns_a_planted_multilabel_signal():
    x, y_train, y_val = planted(n_labels=6)
    out = evaluate_task("propensity_category", x, y_train, y_val, popularity=np.arange(1, 7), config=TINY)
    assert out["auroc"] > 0.8
    assert 0 < out["diversity"] <= 1 and 0 <= out["novelty"] <= 1
    assert out["score"] == pytest.approx(0.8 * out["auroc"] + 0.1 * out["diversity"] + 0.1 * out["novelty"], abs=1e-4)


def test_noise_scores_near_one_half():
    x, y_train, y_val = planted(signal=False, seed=3)
    out = evaluate_task("conversion", x, y_train, y_val, config=TINY)
    assert all(abs(epoch["auroc"] - 0.5) < 0.06 for epoch in out["per_epoch"])


def test_same_inputs_same_numbers():
    x, y_train, y_val = planted(n=600)
    a = evaluate_task("churn", x, y_train, y_val, config=TINY)
    b = evaluate_task("churn", x, y_train, y_val, config=TINY)
    assert a["per_epoch"] == b["per_epoch"]


def test_best_epoch_is_the_first_maximum(monkeypatch):
    from ubp.evaluate import protocol

    scores = iter([0.6, 0.7, 0.7])
    monkeypatch.setattr(protocol, "_validate", lambda *a: {"auroc": (s := next(scores)), "diversity": None,
                                                          "novelty": None, "score": s})
    x, y_train, y_val = planted(n=200)
    out = evaluate_task("churn", x, y_train, y_val, config=TINY)
    assert out["best_epoch"] == 1 and out["score"] == 0.7


def test_initial_weights_follow_the_official_creation_order():
    d, n_out, thin, wide = 5, 3, 8, 16
    net = build_net(d, n_out, ProtocolConfig(thin=thin, wide=wide, seed=7))
    torch.manual_seed(7)
    layers = [nn.Linear(d, thin), nn.LayerNorm(thin)] + [nn.LayerNorm(thin) for _ in range(3)]
    for _ in range(3):
        layers += [nn.Linear(thin, wide), nn.GELU(), nn.Linear(wide, thin)]
    layers += [nn.LayerNorm(thin), nn.Linear(thin, n_out)]
    reference = [p for layer in layers for p in layer.parameters()]
    ours = list(net.parameters())
    assert len(ours) == len(reference)
    assert all(torch.equal(a, b) for a, b in zip(ours, reference))


def test_align_orders_task_clients_like_the_submission():
    task_ids = np.array([30, 10, 20])
    y = np.array([[3], [1], [2]])
    ids, x, y_train, y_val = align(task_ids, y, y * 10, np.array([20, 99, 30, 10]), np.arange(4)[:, None])
    assert ids.tolist() == [20, 30, 10]
    assert x[:, 0].tolist() == [0, 2, 3]
    assert y_train[:, 0].tolist() == [2, 3, 1] and y_val[:, 0].tolist() == [20, 30, 10]


def test_align_requires_every_task_client():
    with pytest.raises(UbpError, match="1 task clients have no embedding"):
        align(np.array([1, 2]), np.zeros((2, 1)), np.zeros((2, 1)), np.array([2, 3]), np.zeros((2, 4)))


def test_config_from_params():
    params = {"profile": "default", "sizes": {"default": {"thin": 64, "wide": 128}}, "threads": 1, "lr": 0.01}
    config = ProtocolConfig.from_params(params)
    assert (config.thin, config.wide, config.threads, config.lr, config.seed) == (64, 128, 1, 0.01, 1278)
    with pytest.raises(UbpError, match="no network size 'official'"):
        ProtocolConfig.from_params(params, "official")
