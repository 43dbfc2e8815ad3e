"""Wall time and peak RSS of the `features` stage's DuckDB code against plain pandas.

    python benchmarks/features_bench.py [--canonical-dir data/canonical] [--split-dir data/split]
                                        [--threads 2] [--out reports/bench/features_bench.md]

Each measurement runs in a fresh process (so peak RSS is its own): (1) build_features with every
family, (2) build_features with only the families pandas also computes, (3) those families in
plain pandas (whole event tables in memory, the way one would write it first). The pandas
columns are checked against DuckDB's, so the benchmark doubles as a cross-check.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ubp import schema
from ubp.features import build_features
from ubp.features.build import FeaturesConfig
from ubp.features.sources import TYPE_NAMES

COMPARED = ["activity", "sessions"]  # the families the pandas version implements (in part)
WINDOWS = (7, 14, 28, 60)
SESSION_GAP = pd.Timedelta(minutes=30)


def _inputs(canonical_dir: Path, split_dir: Path):
    split = json.loads((split_dir / schema.SPLIT_FILE).read_text())
    cutoff = datetime.strptime(split["train_target_start"], schema.TIMESTAMP_FORMAT)
    ids = np.load(canonical_dir / schema.RELEVANT_CLIENTS_FILE).astype(np.int64)
    return split_dir / "input", canonical_dir / f"{schema.PROPERTIES}.parquet", ids, cutoff


def pandas_features(events_dir: Path, ids: np.ndarray, cutoff: datetime) -> pd.DataFrame:
    """Counts, distinct items, recency per type and window, and session count/size/duration, in pandas."""
    out = pd.DataFrame(index=pd.Index(ids, name=schema.CLIENT_ID))
    merged = []
    for event, short in TYPE_NAMES.items():
        value = schema.EVENT_VALUE_COLUMN[event]
        df = pd.read_parquet(events_dir / f"{event}.parquet", columns=[schema.CLIENT_ID, schema.TIMESTAMP, value])
        df = df[(df[schema.TIMESTAMP] < cutoff) & df[schema.CLIENT_ID].isin(ids)]
        if value == schema.QUERY:
            df[value] = df[value].map(lambda v: hash(bytes(np.asarray(v, dtype=np.uint8))))
        age = (pd.Timestamp(cutoff) - df[schema.TIMESTAMP]).dt.total_seconds() / 86400
        df = df.assign(age=age)
        g = df.groupby(schema.CLIENT_ID)["age"]
        latest = df.groupby([schema.CLIENT_ID, value])["age"].min().reset_index()
        for suffix, limit in [(f"{w}d", w) for w in WINDOWS] + [("all", np.inf)]:
            out[f"{short}_count_{suffix}"] = df[df.age <= limit].groupby(schema.CLIENT_ID).size()
            out[f"{short}_distinct_items_{suffix}"] = latest[latest.age <= limit].groupby(schema.CLIENT_ID).size()
        out[f"{short}_days_since_last"], out[f"{short}_days_since_first"] = g.min(), g.max()
        merged.append(df[[schema.CLIENT_ID, schema.TIMESTAMP]])
    ev = pd.concat(merged).sort_values([schema.CLIENT_ID, schema.TIMESTAMP], kind="stable")
    new = (ev[schema.CLIENT_ID].diff() != 0) | (ev[schema.TIMESTAMP].diff() > SESSION_GAP)
    ev["session"] = new.cumsum()
    sessions = ev.groupby("session").agg(client=(schema.CLIENT_ID, "first"), size=(schema.TIMESTAMP, "size"),
                                         start=(schema.TIMESTAMP, "min"), stop=(schema.TIMESTAMP, "max"))
    sessions["minutes"] = (sessions.stop - sessions.start).dt.total_seconds() / 60
    per_client = sessions.groupby("client")
    out["session_count_all"] = per_client.size()
    out["session_size_mean"] = per_client["size"].mean()
    out["session_duration_mean"] = per_client["minutes"].mean()
    recency = [c for c in out.columns if "days_since" in c]
    out[recency] = out[recency].fillna((cutoff - ev[schema.TIMESTAMP].min()).total_seconds() / 86400)
    return out.fillna(0).astype(np.float32).reset_index()


def worker(kind: str, canonical_dir: Path, split_dir: Path, threads: int, memory_limit: str | None) -> dict:
    events_dir, properties, ids, cutoff = _inputs(canonical_dir, split_dir)
    cfg = FeaturesConfig(threads=threads, memory_limit=memory_limit)
    start = time.perf_counter()
    if kind == "duckdb_all":
        table = build_features(events_dir, properties, ids, cutoff, cfg)
    elif kind == "duckdb_subset":
        table = build_features(events_dir, properties, ids, cutoff, cfg, only=COMPARED)
    else:
        table = pandas_features(events_dir, ids, cutoff)
    seconds = time.perf_counter() - start
    result = {"kind": kind, "seconds": seconds, "columns": table.shape[1] - 1, "rows": len(table),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if kind == "pandas":  # cross-check against DuckDB (after the measurement)
        ref = build_features(events_dir, properties, ids, cutoff, FeaturesConfig(threads=threads), only=COMPARED)
        columns = table.columns[1:]
        diff = np.abs(ref[columns].to_numpy(np.float64) - table[columns].to_numpy(np.float64))
        result["max_abs_diff_vs_duckdb"] = float(diff.max())
        result["max_diff_column"] = str(columns[int(diff.max(axis=0).argmax())])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canonical-dir", type=Path, default=schema.CANONICAL_DIR)
    parser.add_argument("--split-dir", type=Path, default=schema.SPLIT_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", help="DuckDB memory_limit, e.g. 1GB (default: DuckDB's, 80%% of RAM)")
    parser.add_argument("--out", type=Path, default=schema.BENCH_DIR / "features_bench.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.canonical_dir, args.split_dir, args.threads, args.memory_limit)))
        return 0
    rows = {}
    for kind in ("duckdb_all", "duckdb_subset", "pandas"):
        cmd = [sys.executable, __file__, "--worker", kind, "--canonical-dir", str(args.canonical_dir),
               "--split-dir", str(args.split_dir), "--threads", str(args.threads)]
        cmd += ["--memory-limit", args.memory_limit] if args.memory_limit else []
        rows[kind] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(rows[kind], file=sys.stderr)
    events_dir = args.split_dir / "input"
    n_events = {e: int(pd.read_parquet(events_dir / f"{e}.parquet", columns=[schema.CLIENT_ID]).shape[0])
                for e in schema.EVENT_TYPES}
    sub, pdx = rows["duckdb_subset"], rows["pandas"]
    lines = ["# Feature stage benchmark", "",
             f"`python benchmarks/features_bench.py --canonical-dir {args.canonical_dir} --split-dir {args.split_dir} "
             f"--threads {args.threads}" + (f" --memory-limit {args.memory_limit}" if args.memory_limit else "") + "`", "",
             f"Data: {rows['duckdb_all']['rows']:,} clients; input events {sum(n_events.values()):,} "
             f"({', '.join(f'{k} {v:,}' for k, v in n_events.items())}).", "",
             "| run | columns | wall time (s) | peak RSS (MB) |", "|---|---|---|---|"]
    for kind, label in (("duckdb_all", "DuckDB, all families"), ("duckdb_subset", f"DuckDB, {' + '.join(COMPARED)}"),
                        ("pandas", "pandas, counts/distinct/recency/sessions")):
        r = rows[kind]
        lines.append(f"| {label} | {r['columns']} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", f"pandas / DuckDB subset: time × {pdx['seconds'] / sub['seconds']:.2f}, "
                  f"peak RSS × {pdx['peak_rss_mb'] / sub['peak_rss_mb']:.2f} (the pandas run computes "
                  f"{pdx['columns']} of the subset's {sub['columns']} columns).",
              f"Largest difference between the pandas and DuckDB values: {pdx['max_abs_diff_vs_duckdb']:.2g} "
              f"(`{pdx['max_diff_column']}`).", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
