"""Ingest and split of one raw directory, twice: the md5 of every file they write, side by side ->
reports/bench/data_determinism.{md,json}.

    python benchmarks/data_determinism.py /work/scale/1.0/data/synthetic --memory-limit 6GB \
        --temp-directory /work/scale/tmp --workdir /work/scale/determinism

At the real size DuckDB writes a file of many row groups; DVC hashes the bytes, so a layout that
changed between two runs of the same stage made DVC re-run every stage downstream of it. The small
data of benchmarks/determinism.py has too few rows to show it (tests/test_db.py checks the writer
on 300k rows). Both runs use DuckDB's default thread count; the wall time of each stage is kept.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from cross_cpu import cpu_model  # noqa: E402  (benchmarks/ is this script's directory)
from ubp import schema  # noqa: E402
from ubp.combine.stage import fingerprint  # noqa: E402
from ubp.data.ingest import ingest  # noqa: E402
from ubp.data.split import split  # noqa: E402
from ubp.io import save_json, save_text  # noqa: E402

OUT = schema.BENCH_DIR / "data_determinism"


def run(raw_dir: Path, root: Path, memory_limit: str | None, temp_directory: str | None) -> tuple[dict, dict]:
    """One ingest + split into root; the md5 of every file written (relative path -> md5) and the seconds."""
    seconds = {}
    started = time.perf_counter()
    ingest(raw_dir, root / "canonical", memory_limit, temp_directory)
    seconds["ingest"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    split(root / "canonical", root / "split", memory_limit, temp_directory)
    seconds["split"] = round(time.perf_counter() - started, 1)
    return fingerprint(root), seconds


def markdown(result: dict) -> str:
    (first, second), (s1, s2) = result["hashes"], result["seconds"]
    files = sorted(set(first) | set(second))
    same = sum(first.get(f) == second.get(f) for f in files)
    lines = ["# Ingest and split twice, byte for byte", "",
             f"Made by `python benchmarks/data_determinism.py` at commit {result['commit']} on {result['cpu']}: "
             f"`{result['raw_dir']}` ({result['events']:,} events) ingested and split twice into fresh directories "
             f"(memory_limit {result['memory_limit']}, DuckDB's default threads). **{same} of {len(files)} files equal.**",
             "", "| file | run 1 | run 2 | equal |", "|---|---|---|---|"]
    lines += [f"| {f} | {first.get(f, '-')[:12]} | {second.get(f, '-')[:12]} | "
              f"{'yes' if first.get(f) == second.get(f) else '**no**'} |" for f in files]
    lines += ["", "| stage | run 1 s | run 2 s |", "|---|---:|---:|"]
    lines += [f"| {stage} | {s1[stage]} | {s2[stage]} |" for stage in s1]
    lines += ["", f"Mean load while it ran: {result['load']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw_dir", type=Path)
    parser.add_argument("--memory-limit", default=None)
    parser.add_argument("--temp-directory", default=None)
    parser.add_argument("--workdir", type=Path, required=True, help="scratch directory (emptied first)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    shutil.rmtree(args.workdir, ignore_errors=True)
    hashes, seconds, loads = [], [], []
    for i in (1, 2):
        h, s = run(args.raw_dir, args.workdir / f"run{i}", args.memory_limit, args.temp_directory)
        hashes.append(h)
        seconds.append(s)
        loads.append(os.getloadavg()[1])
        print(f"run {i}: {len(h)} files, {s}", flush=True)
    events = sum(pq.ParquetFile(args.raw_dir / f"{e}.parquet").metadata.num_rows for e in schema.EVENT_TYPES)
    result = {"commit": commit, "cpu": cpu_model(), "raw_dir": str(args.raw_dir), "events": events,
              "memory_limit": args.memory_limit, "hashes": hashes, "seconds": seconds,
              "load": round(sum(loads) / len(loads), 1)}
    save_json(args.out.with_suffix(".json"), result)
    save_text(args.out.with_suffix(".md"), markdown(result))
    shutil.rmtree(args.workdir, ignore_errors=True)
    print(markdown(result))


if __name__ == "__main__":
    main()
