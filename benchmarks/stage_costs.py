"""Wall time and peak memory of every stage of the DVC graph, run one by one in graph order.

    python benchmarks/stage_costs.py [--out reports/bench/stage_costs.md] [--only embed evaluate]

Runs each stage's command as dvc.yaml resolves it (not through `dvc repro`, so no hashing
overhead is counted) in a fresh process, and reads that process tree's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WRAPPER = (
    "import json, resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1], shell=True).returncode; "
    "print(json.dumps([code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
)


def stages() -> list[tuple[str, str]]:
    from dvc.repo import Repo

    with Repo(".") as repo:
        order = {name: i for i, name in enumerate(["generate", "ingest", "split", "targets", "features", "sequences"])}
        found = [(s.addressing, s.cmd) for s in repo.index.stages if s.cmd]
    kinds = ["embed@", "evaluate@", "ensemble", "report"]

    def rank(item):
        name = item[0]
        if name in order:
            return (order[name], name)
        return (len(order) + next((i for i, k in enumerate(kinds) if name.startswith(k)), len(kinds)), name)

    return sorted(found, key=rank)


def measure(cmd: str) -> tuple[float, float]:
    start = time.time()
    out = subprocess.run([sys.executable, "-c", WRAPPER, cmd], capture_output=True, text=True, env=os.environ)
    seconds = time.time() - start
    code, max_rss_kb = json.loads(out.stdout.strip().splitlines()[-1])
    if code != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"stage command failed ({code}): {cmd}")
    return seconds, max_rss_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/bench/stage_costs.md"))
    parser.add_argument("--only", nargs="*", help="stage name prefixes to run (default: all)")
    args = parser.parse_args()
    rows = []
    for name, cmd in stages():
        if args.only and not any(name.startswith(p) for p in args.only):
            continue
        seconds, peak_mb = measure(cmd)
        print(f"{name:28s} {seconds:8.1f} s {peak_mb:9.0f} MB", flush=True)
        rows.append((name, seconds, peak_mb))
    lines = [
        "# Stage costs",
        "",
        f"Each stage's command run alone, in graph order, on this machine ({os.cpu_count()} cores); "
        "peak RSS of the stage's process tree. Made by `python benchmarks/stage_costs.py`.",
        "",
        "| stage | wall time (s) | peak memory (MB) |",
        "|---|---:|---:|",
        *[f"| {n} | {s:.1f} | {m:.0f} |" for n, s, m in rows],
        f"| **total** | **{sum(r[1] for r in rows):.1f}** | |",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
