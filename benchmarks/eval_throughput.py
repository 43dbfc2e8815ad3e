"""Throughput of the downstream protocol (training + validation) per network size.

    python benchmarks/eval_throughput.py [--n 10000] [--dim 64] [--threads 2]

Random data is enough: the cost does not depend on the values. Prints a table and writes
reports/eval_throughput.md; the lead uses it to choose the everyday network size and data size.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from ubp import schema
from ubp.evaluate.protocol import ProtocolConfig, evaluate_task
from ubp.io import save_text

SIZES = {"official": (2048, 4096), "512/1024": (512, 1024), "256/512": (256, 512), "128/256": (128, 256)}
KINDS = {schema.CHURN: 1, schema.PROPENSITY_SKU: schema.N_TARGET_LABELS}  # binary and 100-label tasks


def measure(thin: int, wide: int, task: str, n_labels: int, n: int, dim: int, threads: int, epochs: int) -> float:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float16)
    y_train = (rng.random((n, n_labels)) < 0.1).astype(np.uint8)
    y_val = (rng.random((n, n_labels)) < 0.1).astype(np.uint8)
    popularity = rng.integers(1, 100, n_labels) if n_labels > 1 else None
    config = ProtocolConfig(thin=thin, wide=wide, epochs=epochs, threads=threads)
    started = time.perf_counter()
    evaluate_task(task, x, y_train, y_val, popularity, config)
    return epochs * n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="clients per task")
    parser.add_argument("--dim", type=int, default=64, help="embedding width")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(schema.REPORTS_DIR / "eval_throughput.md"))
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()

    measure(64, 128, schema.CHURN, 1, 512, args.dim, args.threads, 1)  # warm-up: thread pool, allocator
    rows = []
    for size in args.sizes:
        thin, wide = SIZES[size]
        rates = {task: measure(thin, wide, task, n_labels, args.n, args.dim, args.threads, args.epochs)
                 for task, n_labels in KINDS.items()}
        # one evaluate stage = 6 tasks of ~n clients each (churn has fewer: an upper bound)
        samples = args.epochs * args.n
        six_tasks = 2 * samples / rates[schema.CHURN] + 4 * samples / rates[schema.PROPENSITY_SKU]
        rows.append((size, thin, wide, rates[schema.CHURN], rates[schema.PROPENSITY_SKU], six_tasks))
        print(f"{size:>9}: binary {rates[schema.CHURN]:8.0f} samples/s, 100 labels "
              f"{rates[schema.PROPENSITY_SKU]:8.0f} samples/s, six tasks ≈ {six_tasks:7.0f} s", flush=True)

    lines = [
        "# Downstream evaluator throughput",
        "",
        f"Training + validation, {args.epochs} epochs, N = {args.n:,} clients per task, d = {args.dim}, "
        f"{args.threads} torch threads, torch {torch.__version__}, {platform.machine()}, "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs. "
        "Samples/s = epochs × N / wall seconds of one task (validation passes included). "
        "\"Six tasks\" = 2 binary + 4 propensity tasks at N clients each (churn has fewer, so an upper bound).",
        "",
        "| size | thin | wide | binary task, samples/s | 100-label task, samples/s | six tasks, s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {s} | {t} | {w} | {b:,.0f} | {p:,.0f} | {six:,.0f} |" for s, t, w, b, p, six in rows]
    save_text(args.out, "\n".join(lines) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
