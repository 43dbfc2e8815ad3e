"""Which torch/numpy operations give different bytes on different CPU models: one hash per op.

`cross_cpu.py` finds which profiles move between CPU models; this finds which operations do. Each
probe runs one operation on fixed seeded inputs (the shapes and ops our profiles train with:
matmuls of several shapes through MKL, their backward, reductions, normalisations, activations,
the losses, torch's random draws, the optimizers' steps, a GRU and attention) and prints the sha1
of its output bytes as JSON. Run it under `import ubp` (the kernel pins), natively and under
`qemu-x86_64 -cpu <model>`, and compare:

    python benchmarks/kernel_probe.py --compare                  # native vs Haswell, EPYC-Milan
    python benchmarks/kernel_probe.py --compare --emulate Haswell --emulate EPYC-Rome-v1

`--compare` writes reports/bench/kernel_probe.md and .json. The emulator is TCG: an instruction
it implements differently from silicon (notably the approximate reciprocals rcpps/rsqrtps, which
QEMU computes exactly) can make an op differ under emulation that would agree on real hardware:
the report's last section shows what this CPU and QEMU return for one such instruction.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _digest(value) -> str:
    import numpy as np
    import torch

    parts = value if isinstance(value, (tuple, list)) else (value,)
    h = hashlib.sha1()
    for part in parts:
        array = part.detach().contiguous().numpy() if isinstance(part, torch.Tensor) else np.ascontiguousarray(part)
        h.update(array.tobytes())
    return h.hexdigest()[:12]


def probes() -> dict:
    """name -> zero-argument function returning tensors; every input is drawn from a fresh seed."""
    import numpy as np
    import torch
    from torch import nn
    from torch.nn import functional as F

    def x(*shape, seed=0):
        return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))

    def linear_step(d_in, d_out, n):
        layer = nn.Linear(d_in, d_out)
        with torch.no_grad():
            layer.weight.copy_(x(d_out, d_in, seed=1) * 0.05)
            layer.bias.copy_(x(d_out, seed=2) * 0.05)
        inp = x(n, d_in, seed=3).requires_grad_()
        out = layer(inp)
        out.square().mean().backward()
        return out, layer.weight.grad, layer.bias.grad, inp.grad

    def optimizer_step(cls, **kw):
        p = nn.Parameter(x(300, 64, seed=4))
        p.grad = x(300, 64, seed=5)
        opt = cls([p], lr=1e-3, **kw)
        for _ in range(3):
            opt.step()
        return p

    def train_mlp(**kw):
        """rcae's kind of training in miniature: Linear-BatchNorm-GELU blocks, MSE, AdamW, 30 steps."""
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.GELU(), nn.Linear(128, 64))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01, **kw)
        data = x(30, 256, 64, seed=10)
        for batch in data:
            opt.zero_grad()
            F.mse_loss(net(batch + 0.1 * torch.randn_like(batch)), batch).backward()
            opt.step()
        return [p for p in net.parameters()]

    def gru():
        torch.manual_seed(0)
        net = nn.GRU(32, 48, batch_first=True)
        out, h = net(x(16, 20, 32, seed=6))
        out.sum().backward()
        return out, h, net.weight_hh_l0.grad

    def attention():
        q, k, v = x(8, 4, 30, 16, seed=7), x(8, 4, 30, 16, seed=8), x(8, 4, 30, 16, seed=9)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def randn():
        torch.manual_seed(0)
        return torch.randn(10_000), torch.rand(10_000), torch.randn(7)

    def randperm():
        g = torch.Generator().manual_seed(0)
        return torch.randperm(10_000, generator=g).to(torch.float32)

    a = x(257, 300)
    return {
        "mm 7x5 @ 5x3": lambda: x(7, 5) @ x(5, 3, seed=1),
        "mm 128x64 @ 64x256": lambda: x(128, 64) @ x(64, 256, seed=1),
        "mm 1000x300 @ 300x128": lambda: x(1000, 300) @ x(300, 128, seed=1),
        "mm 512x1024 @ 1024x512": lambda: x(512, 1024) @ x(1024, 512, seed=1),
        "bmm 8x30x16 @ 8x16x30": lambda: torch.bmm(x(8, 30, 16), x(8, 16, 30, seed=1)),
        "linear 300->256 fwd+bwd (n 128)": lambda: linear_step(300, 256, 128),
        "linear 64->32 fwd+bwd (n 1000)": lambda: linear_step(64, 32, 1000),
        "sum": lambda: (a.sum(), a.sum(0), a.sum(1)),
        "mean": lambda: (a.mean(), a.mean(0), a.mean(1)),
        "var": lambda: (a.var(0), a.var(1)),
        "cumsum": lambda: a.cumsum(1),
        "norm / normalize": lambda: (a.norm(dim=1), F.normalize(a, dim=1)),
        "exp": lambda: a.exp(),
        "log": lambda: a.abs().add(1e-3).log(),
        "tanh": lambda: a.tanh(),
        "sigmoid": lambda: a.sigmoid(),
        "sqrt / rsqrt": lambda: (a.abs().sqrt(), a.abs().add(1e-3).rsqrt()),
        "reciprocal / div": lambda: (a.add(10).reciprocal(), a / a.add(10)),
        "gelu (erf)": lambda: F.gelu(a),
        "gelu (tanh)": lambda: F.gelu(a, approximate="tanh"),
        "softmax": lambda: F.softmax(a, dim=1),
        "log_softmax": lambda: F.log_softmax(a, dim=1),
        "layer_norm": lambda: F.layer_norm(a, (300,)),
        "batch_norm (train)": lambda: F.batch_norm(a, None, None, training=True),
        "mse_loss": lambda: F.mse_loss(a, x(257, 300, seed=1)),
        "cross_entropy": lambda: F.cross_entropy(a, torch.arange(257) % 300),
        "bce_with_logits": lambda: F.binary_cross_entropy_with_logits(a, (x(257, 300, seed=1) > 0).float()),
        "cosine_similarity": lambda: F.cosine_similarity(a, x(257, 300, seed=1)),
        "randn / rand": randn,
        "randperm": randperm,
        "adam step": lambda: optimizer_step(torch.optim.Adam),
        "adamw step": lambda: optimizer_step(torch.optim.AdamW, weight_decay=0.01),
        "adamw step (foreach off)": lambda: optimizer_step(torch.optim.AdamW, weight_decay=0.01, foreach=False),
        "adamw step (fused)": lambda: optimizer_step(torch.optim.AdamW, weight_decay=0.01, fused=True),
        "mlp 30 steps, adamw": lambda: train_mlp(),
        "mlp 30 steps, adamw fused": lambda: train_mlp(fused=True),
        "gru fwd+bwd": gru,
        "attention (causal)": attention,
        "numpy matmul 1000x300 @ 300x128": lambda: np.random.default_rng(0).standard_normal((1000, 300))
        @ np.random.default_rng(1).standard_normal((300, 128)),
        "numpy exp / log": lambda: (np.exp(a.numpy()), np.log(np.abs(a.numpy()) + 1e-3)),
    }


def run_probes() -> dict:
    import importlib

    importlib.import_module("ubp")  # the kernel pins, before numpy and torch load
    import numpy as np
    import torch

    torch.set_num_threads(1)
    hashes = {name: _digest(fn()) for name, fn in probes().items()}
    a = np.abs(np.random.default_rng(0).standard_normal(77_100).astype(np.float32)) + np.float32(1e-3)
    inexact = int((torch.from_numpy(a).sqrt().numpy() != np.sqrt(a)).sum())  # numpy's sqrt is IEEE's
    return {"hashes": hashes, "sqrt_inexact": inexact, "sqrt_n": a.size}


def matmul_ms() -> float:
    """Milliseconds of one 512x1024 @ 1024x512 float32 matmul at one thread (best of a 1.5 s loop)."""
    import importlib
    import time

    importlib.import_module("ubp")
    import torch

    torch.set_num_threads(1)
    x, y = torch.randn(512, 1024), torch.randn(1024, 512)
    best, end = float("inf"), time.perf_counter() + 1.5
    while time.perf_counter() < end:
        t = time.perf_counter()
        x @ y
        best = min(best, time.perf_counter() - t)
    return best * 1e3


RSQRT_C = r"""
#include <immintrin.h>
#include <stdio.h>
int main(void) { float r[8]; _mm256_storeu_ps(r, _mm256_rsqrt_ps(_mm256_set1_ps(2.0f))); printf("%.9g\n", r[0]); return 0; }
"""


def rsqrtps(emulate: str | None, workdir: Path) -> str:
    """What the CPU's approximate rsqrtps instruction returns for 2 (exact 1/sqrt(2) = 0.707106781)."""
    exe = workdir / "rsqrt"
    if not exe.exists():
        (workdir / "rsqrt.c").write_text(RSQRT_C)
        built = subprocess.run(["gcc", "-O1", "-mavx", str(workdir / "rsqrt.c"), "-o", str(exe)],
                               capture_output=True, text=True, check=False)
        if built.returncode:
            return "(no C compiler)"
    cmd = [str(exe)] if not emulate else ["qemu-x86_64", "-cpu", emulate, str(exe)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def child(emulate: str | None, env_set: dict, what: str = "--child"):
    python = [sys.executable] if not emulate else ["qemu-x86_64", "-cpu", emulate, os.path.realpath(sys.executable)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **env_set)
    done = subprocess.run(python + [__file__, what], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"kernel probe under {emulate or 'native'} {env_set} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help="print this process's hashes as JSON")
    parser.add_argument("--matmul", action="store_true", help="print one matmul's milliseconds as JSON")
    parser.add_argument("--compare", action="store_true", help="native vs each --emulate model; write the report")
    parser.add_argument("--emulate", action="append", metavar="CPU", help="a qemu CPU model (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE]",
                        help="also compare with these variables set over the pins (repeatable)")
    parser.add_argument("--out", type=Path, default=HERE.parent / "reports" / "bench" / "kernel_probe")
    args = parser.parse_args()
    if args.child or args.matmul:
        print(json.dumps(run_probes() if args.child else matmul_ms()))
        return
    if not args.compare:
        print(json.dumps(run_probes(), indent=1))
        return
    import tempfile

    from cross_cpu import cpu_model
    from runs import head_commit

    models = args.emulate or ["Haswell", "EPYC-Milan-v1"]
    variants = {"the pins (default)": {}}
    for v in args.variant:
        variants[f"the pins + {v}"] = dict(kv.split("=", 1) for kv in v.split(","))
    native_name = f"native ({cpu_model()})"
    result = {"commit": head_commit(), "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        rsqrt = {native_name: rsqrtps(None, Path(tmp))}
        rsqrt.update({f"qemu -cpu {m}": rsqrtps(m, Path(tmp)) for m in models})
    for label, env_set in variants.items():
        columns = {native_name: child(None, env_set)}
        for model in models:
            print(f"{label}: emulating {model} ...", file=sys.stderr)
            columns[f"qemu -cpu {model}"] = child(model, env_set)
        native = columns[native_name]["hashes"]
        result["variants"][label] = {
            "env": env_set, "matmul_ms": child(None, env_set, "--matmul"), "columns": columns,
            "differ": {c: [n for n, h in col["hashes"].items() if h != native[n]] for c, col in columns.items()
                       if c != native_name}}
    result["rsqrtps_of_2"] = rsqrt
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from ubp.io import save_json, save_text

    save_json(args.out.with_suffix(".json"), result)
    lines = [f"# Kernel probe: which operations give other bytes on another CPU model (commit {result['commit']})",
             "", "`python benchmarks/kernel_probe.py --compare` (one thread; `import ubp` sets the kernel pins). "
             "Each cell: the sha1 prefix of the op's output bytes; one that differs from the native column is "
             "**bold**. The other CPU models are QEMU's (user-mode TCG): their CPUID, so the libraries choose "
             "that model's code paths, but QEMU's arithmetic (see the last section).", ""]
    for label, v in result["variants"].items():
        heads = list(v["columns"])
        native = v["columns"][native_name]["hashes"]
        lines += [f"## Under {label} {v['env'] or ''}".rstrip(), "",
                  f"One 512x1024 @ 1024x512 float32 matmul, one thread, native: {v['matmul_ms']:.2f} ms.", "",
                  "| op | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
        for n in native:
            cells = [c["hashes"][n] if c["hashes"][n] == native[n] else f"**{c['hashes'][n]}**"
                     for c in v["columns"].values()]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("| torch.sqrt results not IEEE's (of {}) | ".format(native and v["columns"][native_name]["sqrt_n"])
                     + " | ".join(str(c["sqrt_inexact"]) for c in v["columns"].values()) + " |")
        lines += ["", *[f"- {c}: {len(d)} of {len(native)} ops differ" + (f" ({', '.join(d)})" if d else "")
                        for c, d in v["differ"].items()], ""]
    lines += ["## The approximate instruction", "",
              "`_mm256_rsqrt_ps(2.0)` (exact 1/sqrt(2) = 0.707106781): "
              + "; ".join(f"{k}: {val}" for k, val in rsqrt.items()), ""]
    save_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
