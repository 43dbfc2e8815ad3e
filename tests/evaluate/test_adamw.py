"""BlockedAdamW against torch.optim.AdamW (the official optimizer): the same weights, bit for bit."""
import pytest
import torch
from torch.nn import functional as F

from ubp.evaluate.adamw import BLOCK, BlockedAdamW
from ubp.evaluate.protocol import ProtocolConfig, build_net


def train(d_in, n_out, thin, wide, blocked, steps=12, block=64):
    net = build_net(d_in, n_out, ProtocolConfig(thin=thin, wide=wide))
    optimizer = BlockedAdamW(net.parameters(), lr=1e-3, block=block) if blocked \
        else torch.optim.AdamW(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(128, d_in, generator=generator)
        y = (torch.rand(128, n_out, generator=generator) < 0.2).float()
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("d_in, n_out, thin, wide, block", [
    (5, 7, 24, 40, 64),  # sizes that are not multiples of the alignment, blocks that cut parameters
    (64, 100, 128, 256, BLOCK),  # the default block: two blocks, each split between threads
])
def test_same_weights_as_torch_adamw(threads, d_in, n_out, thin, wide, block):
    torch.set_num_threads(threads)
    want = train(d_in, n_out, thin, wide, blocked=False)
    got = train(d_in, n_out, thin, wide, blocked=True, block=block)
    assert len(got) == len(want)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert not torch.equal(want[0], build_net(d_in, n_out, ProtocolConfig(thin=thin, wide=wide)).input_projection.weight)


def test_parameters_and_gradients_live_in_the_buffers():
    net = build_net(3, 2, ProtocolConfig(thin=8, wide=16))
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = BlockedAdamW(net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # copied, unchanged
    net(torch.ones(4, 3)).sum().backward()
    assert optimizer.grad.abs().sum() > 0
    optimizer.zero_grad()
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
