"""twhin: a planted two-world graph (loss falls, a held-out true edge outranks random ones) and
svd's hand-made events (1 and 2 twins, events at the cutoff ignored)."""
import dataclasses

import numpy as np
import pytest
import torch

from ubp import schema
from ubp.config import build
from ubp.io import UbpError
from ubp.models import twhin
from tests.models.test_svd import RELEVANT, write_events


def config(**over) -> twhin.Config:
    base = {"seed": 0, "hidden": 16, "epochs": 30, "batch_size": 32, "lr": 0.01, "embedding_lr": 0.05,
            "patience": 30, "val_fraction": 0.0, "threads": 1, "min_clients": 1}
    return build(twhin.Config, {**base, **over}, "models.twhin")


def planted_graph(clients=40, urls=20, per_client=6, seed=0):
    """Clients of world w (= client % 2) visit URLs of world w only; 2 SKUs so the encoder has input."""
    rng = np.random.default_rng(seed)
    client, item = [], []
    for c in range(clients):
        own = np.flatnonzero(np.arange(urls) % 2 == c % 2)
        for u in rng.choice(own, size=per_client, replace=False):
            client.append(c)
            item.append(2 + u)
    n = len(client)
    relation = np.full(n, twhin.RELATIONS.index(schema.PAGE_VISIT), np.int64)
    return twhin.Graph(np.array(client), np.array(item), relation, clients, np.array([1, 2]),
                       np.zeros((2, 16), np.uint8), np.array([1, 1]), np.array([3, 4]), urls)


def test_loss_falls_and_a_held_out_edge_outranks_random_ones():
    graph = planted_graph()
    seen = set(zip(graph.client.tolist(), graph.item.tolist()))
    info = {}
    model, trained = twhin.train(graph, config(), info)
    losses = [row["train_loss"] for row in info["curve"]]
    assert losses[-1] < 0.7 * losses[0]
    assert trained.all()
    wins = []
    with torch.no_grad():
        for c in range(graph.n_clients):
            same = [2 + u for u in range(graph.n_urls) if u % 2 == c % 2 and (c, 2 + u) not in seen]
            other = [2 + u for u in range(graph.n_urls) if u % 2 != c % 2]
            items = torch.tensor(same + other)
            relation = torch.full((len(items),), int(graph.relation[0]))
            scores = model.logits(torch.tensor([c]), items, relation)[0].numpy()
            wins.append((scores[: len(same), None] > scores[None, len(same):]).mean())
    assert np.mean(wins) > 0.9  # a true (unseen, same-world) edge above a random other-world one


def test_untrained_clients_get_their_edges_mean_and_edgeless_ones_zero():
    graph = planted_graph()
    graph = dataclasses.replace(graph, n_clients=graph.n_clients + 1)  # one client without edges
    model, trained = twhin.train(graph, config(epochs=2, fit_clients=30), {})
    v = twhin.client_vectors(model, graph, trained)
    learned = np.zeros(graph.n_clients, bool)
    learned[graph.client[trained]] = True
    assert 25 <= learned.sum() <= 30 and np.allclose(v[-1], 0)
    outside = np.flatnonzero(~learned[:-1])[0]
    with torch.no_grad():
        edges = torch.from_numpy(np.flatnonzero(graph.client == outside))
        mean = model.targets(torch.from_numpy(graph.item)[edges], torch.from_numpy(graph.relation)[edges]).sum(0)
    np.testing.assert_allclose(v[outside], (mean / mean.norm()).numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(v[:-1], axis=1), 1.0, atol=1e-5)


def test_hand_made_events_twins_cutoff_and_determinism(tmp_path):
    ctx = write_events(tmp_path / "a")
    late = [(schema.PRODUCT_BUY, 3, 10), (schema.REMOVE_FROM_CART, 1, 20), (schema.PAGE_VISIT, 3, 100)]
    with_late = write_events(tmp_path / "b", late=late)
    cfg = config(epochs=3, batch_size=4)
    graph = twhin.load_graph(ctx, cfg)
    assert len(graph.client) == 10 + 15 + 2 + 10  # distinct (client, item, relation): buy, add, remove, visit
    assert graph.n_skus == 6 and graph.n_urls == 6 and graph.price.tolist() == [11, 12, 13, 21, 22, 23]
    x = twhin.embed(ctx, cfg)
    assert x.shape == (len(RELEVANT), 16) and np.allclose(x[list(RELEVANT).index(6)], 0)
    assert np.array_equal(x, twhin.embed(with_late, cfg))
    assert not np.array_equal(x, twhin.embed(ctx, config(epochs=3, batch_size=4, seed=1)))


def test_a_cold_sku_has_a_vector_from_its_attributes():
    graph = planted_graph()
    model = twhin.TwHIN(graph, config())
    with torch.no_grad():
        v = model.items(torch.tensor([0, 1]))
    assert graph.sku_slot[0] == 1 and torch.isfinite(v).all() and v.norm(dim=1).min() > 0


def test_settings_checked():
    with pytest.raises(UbpError, match="relations"):
        config(relations=["product_buy", "search_query"])
    with pytest.raises(UbpError, match="temperature"):
        config(temperature=0)


def test_two_threads_give_the_same_bytes(tiny_context):
    """Without torch's deterministic kernels two threads changed the last bits (found by the contract test)."""
    cfg = config(hidden=32, epochs=1, batch_size=512, threads=2, val_fraction=0.1)
    assert np.array_equal(twhin.embed(tiny_context, cfg), twhin.embed(tiny_context, cfg))
