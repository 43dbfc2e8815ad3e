"""Throughput of the downstream evaluator against what its arithmetic allows, and its cost at scale.

    python benchmarks/eval_throughput.py [--threads 1 2] [--widths 256 2048] [--scale 100000 1000000]

Random inputs of the right shape: the cost does not depend on the values. For each network
(default 256/512, official 2048/4096), input width and torch thread count: training and validation
samples/s (one batch of 128 at a time, as the protocol does), the bound from the FLOPs per sample and
the machine's measured matmul peak (a large torch.mm), and the training step split into forward,
backward and optimizer. Then the pieces that grow with the data: AUROC (+ diversity, novelty) over
N x 100 labels, reading the float32 embedding file, and an estimate of one profile's evaluation.
The machine is shared: every figure carries os.getloadavg() taken when it was measured.
Writes reports/bench/eval_throughput.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ubp import schema
from ubp.evaluate.adamw import BlockedAdamW
from ubp.evaluate.metrics import TaskMetrics
from ubp.evaluate.protocol import ProtocolConfig, Rows, build_net
from ubp.evaluate.run import write_float32
from ubp.io import save_json, save_text

NETWORKS = {"default": (256, 512), "official": (2048, 4096)}
N_LABELS = schema.N_TARGET_LABELS
BATCH = 128


def load() -> float:
    return round(os.getloadavg()[0], 2)


def matmul_peak(threads: int, n: int = 2048, repeats: int = 8) -> dict:
    """GFLOP/s of the best of `repeats` n x n float32 products."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return {"threads": threads, "gflops": round(2 * n**3 / best / 1e9, 1), "load": load()}


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def flops_per_sample(width: int, thin: int, wide: int, n_out: int) -> dict:
    """Matmul FLOPs of one sample: forward; training = forward + backward (2x forward, less the input
    gradient of the first layer, which nothing needs)."""
    forward = 2 * (width * thin + 3 * 2 * thin * wide + thin * n_out)
    return {"forward": forward, "train": 3 * forward - 2 * width * thin}


def train_rates(width: int, thin: int, wide: int, threads: int, batches: int, blocked: bool = True) -> dict:
    """Training samples/s and the step's parts (ms per batch, the median of `batches` steps), with the
    protocol's optimizer (BlockedAdamW) or torch.optim.AdamW (the same arithmetic, per tensor)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    net = build_net(width, N_LABELS, ProtocolConfig(thin=thin, wide=wide))
    optimizer = BlockedAdamW(net.parameters(), lr=1e-3) if blocked else torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(BATCH, width)
    y = (torch.rand(BATCH, N_LABELS) < 0.05).float()
    parts = {"forward": [], "backward": [], "optimizer": []}
    for i in range(batches + 2):  # 2 warm-up steps: allocations, optimizer state
        t0 = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        t1 = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if i >= 2:
            for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                parts[key].append(value)
    ms = {key: float(np.median(values)) * 1e3 for key, values in parts.items()}
    step = sum(ms.values())
    return {"samples_per_s": round(BATCH / step * 1e3), **{f"{k}_ms": round(v, 3) for k, v in ms.items()},
            "load": load()}


@torch.no_grad()
def validation_rates(width: int, thin: int, wide: int, threads: int, batches: int) -> dict:
    """Validation samples/s: the forward pass alone and with the metrics' per-batch update."""
    torch.set_num_threads(threads)
    net = build_net(width, N_LABELS, ProtocolConfig(thin=thin, wide=wide)).eval()
    x = torch.randn(BATCH, width)
    y = (torch.rand(BATCH, N_LABELS) < 0.05).to(torch.uint8)
    metrics = TaskMetrics(schema.PROPENSITY_SKU, np.arange(N_LABELS, 0, -1))
    forward, update = [], []
    for i in range(batches + 2):
        t0 = time.perf_counter()
        logits = net(x)
        t1 = time.perf_counter()
        metrics.update(logits, y)
        t2 = time.perf_counter()
        if i >= 2:
            forward.append(t1 - t0)
            update.append(t2 - t1)
    fwd, upd = float(np.median(forward)) * 1e3, float(np.median(update)) * 1e3
    return {"samples_per_s": round(BATCH / (fwd + upd) * 1e3), "forward_ms": round(fwd, 3),
            "metric_update_ms": round(upd, 3), "load": load()}


def fused_optimizer_ms(width: int, thin: int, wide: int, threads: int, steps: int = 5) -> float:
    """For comparison only: torch's fused AdamW step (not the official optimizer's arithmetic)."""
    torch.set_num_threads(threads)
    net = build_net(width, N_LABELS, ProtocolConfig(thin=thin, wide=wide))
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
    optimizer.step()
    return round(float(np.median([_timed(optimizer.step) for _ in range(steps)])) * 1e3, 3)


def metric_compute(n: int, threads: int) -> dict:
    """One validation pass's metrics over n clients x 100 labels: per-batch updates, then compute()."""
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    metrics = TaskMetrics(schema.PROPENSITY_SKU, rng.integers(1, 1000, N_LABELS))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    logits = torch.from_numpy(rng.normal(-3, 1, (BATCH * 64, N_LABELS)).astype(np.float32))
    targets = torch.from_numpy((rng.random((BATCH * 64, N_LABELS)) < 0.02).astype(np.uint8))
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        j = start % len(logits)
        metrics.update(logits[j : j + BATCH], targets[j : j + BATCH])
    updated = time.perf_counter()
    metrics.compute()
    done = time.perf_counter()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    return {"n": n, "update_s": round(updated - started, 2), "compute_s": round(done - updated, 2),
            "peak_rss_growth_mb": round(grown / 1024), "load": load()}


def read_rates(n: int, width: int) -> dict:
    """Writing the float32 copy (from float16) and reading it back block by block: every row in
    order, and every other row by index (churn's case)."""
    with tempfile.TemporaryDirectory(prefix="ubp-eval-bench-") as tmp:
        src, out = Path(tmp) / "f16.npy", Path(tmp) / "f32.npy"
        np.save(src, np.random.default_rng(0).normal(size=(n, width)).astype(np.float16))
        write_s = _timed(lambda: write_float32(src, out))
        step = 4096
        every = Rows(out)
        half = Rows(out, np.arange(0, n, 2))
        seq_s = _timed(lambda: [every.block(s, min(s + step, n)) for s in range(0, n, step)])
        sub_s = _timed(lambda: [half.block(s, min(s + step, n // 2)) for s in range(0, n // 2, step)])
    mb = n * width * 4 / 2**20
    return {"n": n, "width": width, "write_float32_s": round(write_s, 2), "read_in_order_mb_per_s": round(mb / seq_s),
            "read_every_other_row_mb_per_s": round(mb / 2 / sub_s), "load": load()}


def end_to_end(n: int, width: int, epochs: int, churn_share: float) -> dict:
    """`evaluate_profile` on a random profile of n clients x width (float16) and random labels, with
    the default network, 2 workers x 1 thread: wall seconds and peak RSS of this process and of the
    largest worker."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="ubp-eval-bench-") as tmp:
        root = Path(tmp)
        ids = rng.permutation(np.arange(n, dtype=np.int64) + 10_000)
        labels = root / "targets" / schema.LABELS_SUBDIR
        labels.mkdir(parents=True)
        for task in schema.TASKS:
            task_ids = np.sort(ids[: int(n * churn_share)] if task == schema.CHURN else ids)
            width_y = 1 if task in schema.BINARY_TASKS else N_LABELS
            arrays = {"client_ids": task_ids}
            for key in ("y_train", "y_validation"):
                arrays[key] = (rng.random((len(task_ids), width_y), dtype=np.float32) < 0.05).astype(np.uint8)
            if width_y > 1:
                arrays["popularity"] = rng.integers(1, 1000, width_y)
            np.savez(labels / f"{task}.npz", **arrays)
            del arrays
        profile = root / "embeddings" / "random"
        profile.mkdir(parents=True)
        np.save(profile / "client_ids.npy", ids)
        emb = np.lib.format.open_memmap(profile / "embeddings.npy", mode="w+", dtype=np.float16, shape=(n, width))
        for start in range(0, n, 65536):
            emb[start : start + 65536] = rng.standard_normal((min(65536, n - start), width), dtype=np.float32)
        del emb
        params = {"profile": "default", "sizes": {"default": dict(zip(("thin", "wide"), NETWORKS["default"]))},
                  "epochs": epochs, "threads": 1, "workers": 2}
        # A fresh process: a spawned worker is forked before it execs, and its peak RSS would count
        # the RSS of whatever this benchmark process held at that moment. Its own peak is VmHWM, which
        # (unlike ru_maxrss) starts again at exec.
        code = ("import json, resource, sys; from ubp.config import build; from ubp.evaluate.protocol import EvalConfig; "
                "from ubp.evaluate.run import evaluate_profile; "
                "cfg = build(EvalConfig, json.loads(sys.argv[1]), 'eval'); "
                "m = evaluate_profile('random', cfg, sys.argv[2], sys.argv[3]); "
                "print(json.dumps({'tasks': {t: v['seconds'] for t, v in m['tasks'].items()}, "
                "'parent': int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]), "
                "'worker': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code, json.dumps(params), str(root / "embeddings"),
                              str(root / "targets")], check=True, capture_output=True, text=True).stdout
        seconds = time.perf_counter() - started
    measured = json.loads(out.strip().splitlines()[-1])
    return {"n": n, "width": width, "epochs": epochs, "seconds": round(seconds), "task_seconds": measured["tasks"],
            "parent_peak_rss_mb": round(measured["parent"] / 1024), "worker_peak_rss_mb": round(measured["worker"] / 1024),
            "load": load()}


def profile_estimate(n: int, churn_share: float, epochs: int, train: float, val: float, auroc_s_per_row: float,
                     write_s_per_row: float, workers: int) -> float:
    """Seconds for one profile: the float32 copy, then six tasks (churn on churn_share x n clients)
    spread over `workers` processes, longest first; each task = epochs x (training + validation +
    the metrics' compute over its clients)."""
    sizes = [n] * 5 + [int(n * churn_share)]
    tasks = sorted((epochs * m * (1 / train + 1 / val + auroc_s_per_row) for m in sizes), reverse=True)
    busy = [0.0] * workers
    for seconds in tasks:
        busy[busy.index(min(busy))] += seconds
    return n * write_s_per_row + max(busy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 2048], help="embedding widths")
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--batches", type=int, default=40, help="timed batches per figure (official: a quarter)")
    parser.add_argument("--scale", type=int, nargs="+", default=[100_000, 1_000_000], help="clients per profile")
    parser.add_argument("--metric-n", type=int, default=1_000_000, help="clients of the metric timing")
    parser.add_argument("--read-n", type=int, default=100_000, help="clients of the file read/write timing")
    parser.add_argument("--churn-share", type=float, default=0.5, help="churn's clients / all (estimate)")
    parser.add_argument("--end-to-end", type=int, nargs=3, metavar=("N", "WIDTH", "EPOCHS"), action="append",
                        default=[], help="also run evaluate_profile on a random profile (default network)")
    parser.add_argument("--out", default=str(schema.BENCH_DIR / "eval_throughput"))
    args = parser.parse_args()
    if args.end_to_end and not args.networks:  # only the end-to-end runs
        print([end_to_end(n, w, e, args.churn_share) for n, w, e in args.end_to_end])
        return

    peaks = {t: matmul_peak(t) for t in args.threads}
    print("matmul peak", peaks, flush=True)
    rows = []
    for name in args.networks:
        thin, wide = NETWORKS[name]
        batches = args.batches if name == "default" else max(4, args.batches // 4)
        for width in args.widths:
            flops = flops_per_sample(width, thin, wide, N_LABELS)
            for threads in args.threads:
                train = train_rates(width, thin, wide, threads, batches)
                val = validation_rates(width, thin, wide, threads, batches)
                gflops = peaks[threads]["gflops"] * 1e9
                row = {"network": name, "thin": thin, "wide": wide, "width": width, "threads": threads,
                       "flops": flops, "train": train, "validation": val,
                       "train_bound": round(gflops / flops["train"]), "validation_bound": round(gflops / flops["forward"]),
                       "torch_adamw": train_rates(width, thin, wide, threads, batches, blocked=False),
                       "fused_optimizer_ms": fused_optimizer_ms(width, thin, wide, threads)}
                # one epoch-sample = one training and one validation sample
                spent = 1 / train["samples_per_s"] + 1 / val["samples_per_s"]
                row["epoch_ratio_to_bound"] = round(spent / ((flops["train"] + flops["forward"]) / gflops), 2)
                rows.append(row)
                print(name, width, threads, train, val, "epoch ratio", row["epoch_ratio_to_bound"], flush=True)
    metric = metric_compute(args.metric_n, 1)
    print("metrics", metric, flush=True)
    reads = read_rates(args.read_n, max(args.widths))
    print("file", reads, flush=True)

    runs = []
    for n, width, epochs in args.end_to_end:
        runs.append(end_to_end(n, width, epochs, args.churn_share))
        print("end to end", runs[-1], flush=True)
    estimates = []
    auroc_per_row = (metric["update_s"] + metric["compute_s"]) / metric["n"]
    for row in rows:
        if row["threads"] != 1:
            continue
        # validation's per-batch metric update is already in the validation rate: count compute() only
        per_row = metric["compute_s"] / metric["n"]
        write_per_row = reads["write_float32_s"] / reads["n"] * row["width"] / reads["width"]
        for n in args.scale:
            seconds = profile_estimate(n, args.churn_share, 3, row["train"]["samples_per_s"],
                                       row["validation"]["samples_per_s"], per_row, write_per_row, workers=2)
            estimates.append({"network": row["network"], "width": row["width"], "n": n, "workers": "2 x 1 thread",
                              "seconds": round(seconds)})
    report = {"torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
              "matmul_peak": peaks, "rows": rows, "metrics": metric, "auroc_s_per_row": auroc_per_row,
              "file": reads, "estimates": estimates, "end_to_end": runs, "churn_share": args.churn_share}
    save_json(f"{args.out}.json", report)
    save_text(f"{args.out}.md", render(report))
    print(f"-> {args.out}.md")


def render(r: dict) -> str:
    peaks = ", ".join(f"{p['threads']} thread(s) {p['gflops']:,} GFLOP/s (load {p['load']})" for p in r["matmul_peak"].values())
    lines = [
        "# Downstream evaluator throughput", "",
        f"`python benchmarks/eval_throughput.py`, torch {r['torch']}, {r['machine']}, {r['cpus']} CPUs. "
        f"Matmul peak (2048 x 2048 torch.mm, best of 8): {peaks}. Inputs are random, batch 128, "
        f"{N_LABELS} labels. 'Bound' = peak GFLOP/s / matmul FLOPs per sample (training: forward + "
        "backward); 'x bound' = how many times slower than the bound one epoch-sample (a training "
        "plus a validation sample) runs. The machine is shared by other jobs: 'load' is the 1-minute "
        "load average when the figure was taken.", "",
        "What the step spends beyond the bound: the matmuls of a 128-row batch run below the large-matrix "
        "peak, LayerNorm/GELU/residual passes and per-op dispatch come on top, and the optimizer's eight "
        "elementwise passes over every weight are bandwidth, not FLOPs. The protocol's optimizer "
        "(`ubp.evaluate.adamw.BlockedAdamW`) runs torch's AdamW arithmetic bit for bit a cache-sized block "
        "at a time; the torch.optim.AdamW column shows the per-tensor original, the fused column torch's "
        "fused kernel, which rounds differently and is not used. Several workers of one thread each beat "
        "one process with two threads for these small matrices.", "",
        "| network | width | threads | train samples/s | train bound | fwd / bwd / optimizer ms | torch.optim.AdamW: samples/s, step ms "
        "| fused AdamW ms (not used) "
        "| validation samples/s | val. bound | of it metric update ms | x bound | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        t, v = x["train"], x["validation"]
        lines.append(f"| {x['network']} {x['thin']}/{x['wide']} | {x['width']} | {x['threads']} | {t['samples_per_s']:,} "
                     f"| {x['train_bound']:,} | {t['forward_ms']} / {t['backward_ms']} / {t['optimizer_ms']} "
                     f"| {x['torch_adamw']['samples_per_s']:,}, {x['torch_adamw']['optimizer_ms']} | {x['fused_optimizer_ms']} | {v['samples_per_s']:,} | {x['validation_bound']:,} "
                     f"| {v['metric_update_ms']} | {x['epoch_ratio_to_bound']} | {t['load']} |")
    m, f = r["metrics"], r["file"]
    lines += [
        "", f"**Metrics at scale**: {m['n']:,} clients x {N_LABELS} labels fed in 128-row batches: updates "
        f"{m['update_s']} s, compute() (AUROC per label, exact) {m['compute_s']} s, peak RSS growth "
        f"{m['peak_rss_growth_mb']:,} MB (load {m['load']}).",
        f"**Embedding file**: {f['n']:,} x {f['width']} float16 -> float32 copy written in {f['write_float32_s']} s; "
        f"read back in blocks at {f['read_in_order_mb_per_s']:,} MB/s in order and "
        f"{f['read_every_other_row_mb_per_s']:,} MB/s taking every other row by index (load {f['load']}).", "",
        f"**One profile's evaluation** (estimate: 6 tasks, churn on {r['churn_share']:.0%} of the clients, 3 epochs, "
        "2 workers x 1 thread at the 1-thread rates above, metric compute() scaled linearly, the float32 copy):", "",
        "| network | width | clients | seconds | hours |", "|---|---|---|---|---|",
    ]
    lines += [f"| {e['network']} | {e['width']} | {e['n']:,} | {e['seconds']:,} | {e['seconds'] / 3600:.2f} |"
              for e in r["estimates"]]
    if r["end_to_end"]:
        lines += ["", "**Measured end to end** (`evaluate_profile`, random profile and labels, default network, "
                  "2 workers x 1 thread; peak RSS of the parent and of the largest worker):", "",
                  "| clients | width | epochs | seconds | parent MB | worker MB | load |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {e['n']:,} | {e['width']} | {e['epochs']} | {e['seconds']:,} | {e['parent_peak_rss_mb'] or 'not measured'} "
                  f"| {e['worker_peak_rss_mb']:,} | {e['load']} |" for e in r["end_to_end"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
