"""combine@ensemble's peak memory and time at the real data's size (blockwise vs the whole-matrix code
it replaced), and the inner-split scorer's time per candidate on a client sample.

    python benchmarks/ensemble_scale.py [--clients 1000000] [--old-clients 100000 250000]
        [--scorer-clients 5000 20000] [--workdir /tmp/ensemble_scale]   # -> reports/bench/ensemble_scale.md

Sources are fake stored profiles in --workdir (client_ids.npy int64 + embeddings.npy + meta.json):
`features` 400 float32 columns (norm none, not centred), `affinity` 200 float32 (l2) and a learned
1,024-column float16 profile (l2), i.e. 1,624 output columns. Each measurement runs in a fresh
process (peak RSS = its VmHWM). The old code (`ubp/ensemble.py` at OLD_COMMIT, plus the checks
and float16 copy `ubp.embed.compute` made of its matrix) would need ~20 GB at 1M clients, more than
this shared machine allows, so it runs at --old-clients and is extrapolated linearly (its memory
is a constant plus a per-client term). The scorer is timed on synthetic labels (2 binary tasks, 4 of
100 labels) and a 600-column float16 matrix at --scorer-clients, extrapolated linearly to a 50,000
client sample and to all 1M clients (its cost is the network's passes over the clients).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

from ubp import schema
from ubp.io import save_json, save_text

OLD_COMMIT = "4fc2ba2"  # the last commit with the whole-matrix ensemble
CUTOFF = datetime(2022, 9, 1)
SOURCES = {  # name: (columns, dtype, ensemble settings)
    "features": (400, np.float32, {"norm": "none", "center": False}),
    "affinity": (200, np.float32, {"norm": "l2"}),
    "learned": (1024, np.float16, {"norm": "l2"}),
}
REPORT = schema.BENCH_DIR / "ensemble_scale"
ROWS_PER_WRITE = 50_000


def peak_rss_gb() -> float:
    """This process's peak RSS (VmHWM): unlike ru_maxrss it does not inherit the parent's RSS at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2 ** 20  # kB -> GB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def make_sources(root: Path, n: int) -> Path:
    """Fake stored profiles for n clients (written a block of rows at a time); reused when present."""
    events = root / "events"
    for name, (d, dtype, _) in SOURCES.items():
        out = root / name
        if (out / "meta.json").exists():
            continue
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "client_ids.npy", np.arange(n, dtype=np.int64) + 10 ** 7)
        x = np.lib.format.open_memmap(out / "embeddings.npy", mode="w+", dtype=dtype, shape=(n, d))
        rng = np.random.default_rng(len(name))
        for a in range(0, n, ROWS_PER_WRITE):
            block = rng.standard_normal((min(ROWS_PER_WRITE, n - a), d), dtype=np.float32)
            block[block < 0.3] = 0.0  # mostly zeros, like counts
            x[a:a + len(block)] = block
        x.flush()
        del x
        meta = {"profile": name, "method": "external", "events": str(events),
                "cutoff": CUTOFF.strftime(schema.TIMESTAMP_FORMAT)}
        (out / "meta.json").write_text(json.dumps(meta))
    (root / "params.yaml").write_text(yaml.safe_dump({"models": {}}))
    return root


def context_and_config(root: Path, n: int):
    from ubp.models.base import EmbedContext

    ctx = EmbedContext(client_ids=np.arange(n, dtype=np.int64) + 10 ** 7, events_dir=root / "events",
                       properties_path=root / "properties.parquet", cutoff=CUTOFF)
    # the ensemble section as the old code read it (a mapping of sources); `blockwise` types it
    cfg = {"sources": {name: opts for name, (_, _, opts) in SOURCES.items()}, "balance": "none", "seed": 0,
           "max_dim": 2048, "embeddings_dir": str(root), "params_file": str(root / "params.yaml")}
    return ctx, cfg


def typed(cfg: dict):
    """The old ensemble mapping as today's `ensemble:` section: sources a list, settings in per_source."""
    from ubp.combine import ensemble
    from ubp.config import build

    section = {**cfg, "sources": list(cfg["sources"]), "per_source": cfg["sources"]}
    return build(ensemble.Config, section, "ensemble")


def old_module():
    """ubp/ensemble.py as it was at OLD_COMMIT, imported under another name."""
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:src/ubp/ensemble.py"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    path = Path("/tmp") / f"ubp_old_ensemble_{os.getpid()}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("ubp_old_ensemble", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def child_combine(root: Path, n: int, mode: str, out: Path) -> dict:
    ctx, cfg = context_and_config(root, n)
    base = peak_rss_gb()
    started = time.perf_counter()
    if mode == "blockwise":
        from ubp.combine.ensemble import write_embeddings

        shape = write_embeddings(ctx, typed(cfg), out)
    else:
        matrix = old_module().build(ctx, cfg)
        # what ubp.embed.compute then did with the returned matrix, before np.save
        assert np.isfinite(matrix).all() and np.abs(matrix).max(initial=0.0) <= float(np.finfo(np.float16).max)
        matrix = matrix.astype(np.float16)
        np.save(out, matrix)
        shape = matrix.shape
    return {"mode": mode, "clients": n, "shape": list(shape), "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_gb": round(peak_rss_gb(), 2), "rss_before_gb": round(base, 2), "load": os.getloadavg()[0]}


def synthetic_labels(n: int, rng) -> dict:
    ids = np.arange(n, dtype=np.int64) + 10 ** 7
    labels = {}
    for task in schema.OPEN_TASKS:  # what the inner split scores (ubp.combine.selection.TASKS)
        if task in schema.BINARY_TASKS:
            rows = np.arange(n) if task == schema.CONVERSION else np.arange(0, n, 2)
            labels[task] = {"client_ids": ids[rows], "y_train": (rng.random((len(rows), 1)) < 0.3).astype(np.uint8)}
        else:
            y = (rng.random((n, 100)) < 0.01).astype(np.uint8)
            labels[task] = {"client_ids": ids, "y_train": y, "popularity": y.sum(0).astype(np.int64)}
    return labels


def child_scorer(n: int, threads: int) -> dict:
    from ubp.combine.selection import InnerScorer
    from ubp.evaluate.protocol import EvalConfig
    from ubp.params import load_params

    rng = np.random.default_rng(0)
    config = dataclasses.replace(EvalConfig.from_params(load_params()).protocol(), threads=threads)
    scorer = InnerScorer(synthetic_labels(n, rng), config, folds=2, seed=0)
    x = rng.standard_normal((n, 600), dtype=np.float32).astype(np.float16)
    started = time.perf_counter()
    scorer.score(x)
    return {"clients": n, "seconds": round(time.perf_counter() - started, 1), "threads": threads,
            "load": os.getloadavg()[0]}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def linear(points: list[tuple[float, float]], at: float) -> float:
    (x0, y0), (x1, y1) = points[0], points[-1]
    return y0 + (y1 - y0) * (at - x0) / (x1 - x0)


def markdown(result: dict) -> str:
    lines = ["# The ensemble and its selection at the real data's size", "",
             "Made by `python benchmarks/ensemble_scale.py`" + result["args"] + ". Synthetic stored sources "
             "(features 400 float32 columns, affinity 200 float32, a learned 1,024-column float16 profile; "
             "1,624 output columns, float16). Each row: one fresh process; peak RSS = its VmHWM (file pages "
             "of memory maps included). Load average (1 min) at the end of each run: the machine was shared, so "
             "times are indicative.", "",
             "## combine@ensemble", "", "| code | clients | peak RSS GB | seconds | load |", "|---|---:|---:|---:|---:|"]
    for row in result["combine"]:
        lines.append(f"| {row['mode']} | {row['clients']:,} | {row['peak_rss_gb']:.2f} | {row['seconds']} | "
                     f"{row['load']:.1f} |")
    for row in result["combine_estimated"]:
        lines.append(f"| {row['mode']} (linear estimate) | {row['clients']:,} | ~{row['peak_rss_gb']:.1f} | "
                     f"~{row['seconds']:.0f} | |")
    lines += ["", f"Blockwise output == old output, byte for byte, at {result['identical_at']:,} clients: "
              f"**{result['identical']}** (and on small random matrices for every norm, PCA, balance and "
              "centring: tests/test_ensemble_blockwise.py).", "",
              "## Inner-split scorer, one candidate set (600 columns, 2 folds, 6 tasks)", "",
              "| clients scored | seconds | load |", "|---:|---:|---:|"]
    for row in result["scorer"]:
        lines.append(f"| {row['clients']:,} | {row['seconds']} | {row['load']:.1f} |")
    for row in result["scorer_estimated"]:
        lines.append(f"| {row['clients']:,} (linear estimate) | ~{row['seconds']:.0f} | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--old-clients", type=int, nargs="+", default=[100_000, 250_000])
    parser.add_argument("--scorer-clients", type=int, nargs="+", default=[5_000, 20_000])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the scorer")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ensemble_scale"))
    parser.add_argument("--out", type=Path, default=REPORT)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = (child_combine(Path(rest[0]), int(rest[1]), rest[2], Path(rest[3])) if kind == "combine"
                  else child_scorer(int(rest[0]), int(rest[1])))
        print(json.dumps(result))
        return
    combine, sizes = [], sorted(set(args.old_clients) | {args.clients})
    for n in sizes:
        root = make_sources(args.workdir / f"n{n}", n)
        modes = ["blockwise"] + (["old"] if n in args.old_clients else [])
        for mode in modes:
            combine.append(run_child("combine", str(root), str(n), mode, str(root / f"out_{mode}.npy")))
            print(combine[-1], flush=True)
    small = min(args.old_clients)
    root = args.workdir / f"n{small}"
    identical = (root / "out_blockwise.npy").read_bytes() == (root / "out_old.npy").read_bytes()
    estimated = []
    for mode in ("old", "blockwise"):
        rows = [r for r in combine if r["mode"] == mode and r["clients"] in args.old_clients]
        if len(rows) >= 2 and args.clients not in [r["clients"] for r in combine if r["mode"] == mode]:
            estimated.append({"mode": mode, "clients": args.clients,
                              "peak_rss_gb": linear([(r["clients"], r["peak_rss_gb"]) for r in rows], args.clients),
                              "seconds": linear([(r["clients"], r["seconds"]) for r in rows], args.clients)})
    scorer = []
    for n in args.scorer_clients:
        scorer.append(run_child("scorer", str(n), str(args.threads)))
        print(scorer[-1], flush=True)
    points = [(r["clients"], r["seconds"]) for r in scorer]
    scorer_estimated = [{"clients": n, "seconds": linear(points, n)} for n in (50_000, args.clients)
                        if n not in args.scorer_clients] if len(points) >= 2 else []
    argv = " ".join(sys.argv[1:])
    result = {"args": f" {argv}" if argv else "", "combine": combine, "combine_estimated": estimated,
              "identical": "yes" if identical else "NO", "identical_at": small, "scorer": scorer,
              "scorer_estimated": scorer_estimated}
    save_json(args.out.with_suffix(".json"), result)
    save_text(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
