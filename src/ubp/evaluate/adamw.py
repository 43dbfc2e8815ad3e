"""torch's AdamW, step for step and bit for bit, a cache-sized block of all parameters at a time.

The official pipeline trains with `torch.optim.AdamW(params, lr)`: on CPU its single-tensor path,
which runs eight elementwise passes over every parameter, one tensor after another. Those passes
stream each tensor from memory eight times; at the official size they took longer than the
forward and backward passes. `BlockedAdamW` keeps all parameters (and their gradients) in one flat
buffer and runs the same eight operations, in the same order and with the same scalars, on one
block of it at a time, so a block stays in cache between them. Every element gets the result the
official optimizer gives it (tests/evaluate/test_adamw.py compares the weights bitwise). torch's
fused AdamW is faster still but rounds differently, so it is not the official arithmetic.
"""
from __future__ import annotations

import torch

ALIGN = 16  # each parameter starts on a 64-byte boundary of the buffer, like a tensor of its own
# Elements per block: large enough that per-pass overhead is small and a step has few parallel
# regions (a busy second core makes each one wait), small enough that the block's five buffers
# stay in cache between the passes. Chosen by timing 16k..whole buffer (reports/bench/eval_throughput.md).
BLOCK = 131072


class BlockedAdamW:
    """AdamW with torch's defaults (betas 0.9/0.999, eps 1e-8, weight_decay 0.01, no amsgrad)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, block: int = BLOCK):
        params = [p for p in params if p.requires_grad]
        offsets, total = [], 0
        for p in params:
            offsets.append(total)
            total += -(-p.numel() // ALIGN) * ALIGN
        device = params[0].device
        self.param = torch.zeros(total, device=device)
        self.grad = torch.zeros(total, device=device)
        with torch.no_grad():
            for p, start in zip(params, offsets):
                view = self.param[start : start + p.numel()]
                view.copy_(p.reshape(-1))
                p.data = view.view_as(p)  # the module now trains this slice of the buffer
                p.grad = self.grad[start : start + p.numel()].view_as(p)  # backward adds into it
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.param), torch.zeros_like(self.param)
        # one block per pass off the CPU: a GPU wants few large launches, not cache-sized ones
        self.block = block if device.type == "cpu" else total
        self.scratch = torch.empty(min(self.block, total), device=device)
        self.lr, (self.beta1, self.beta2), self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.steps = torch.zeros((), dtype=torch.float32)  # torch keeps the step count as a float32 tensor

    def zero_grad(self) -> None:
        # In place (the parameters' .grad are views of this buffer); backward then adds the new
        # gradient to +0.0, which gives the gradient itself.
        self.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """torch.optim.adam._single_tensor_adam with decoupled weight decay, block by block."""
        self.steps += 1
        step = self.steps.item()
        lr, beta1, beta2 = self.lr, self.beta1, self.beta2
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        for start in range(0, self.param.numel(), self.block):
            stop = min(start + self.block, self.param.numel())
            param, grad = self.param[start:stop], self.grad[start:stop]
            exp_avg, exp_avg_sq = self.exp_avg[start:stop], self.exp_avg_sq[start:stop]
            param.mul_(1 - lr * self.weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = torch.sqrt(exp_avg_sq, out=self.scratch[: stop - start])
            denom.div_(bias_correction2_sqrt).add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)

