"""aggregated before/after its relevant-clients-first rewrite, and the features stage under a memory limit.

    python benchmarks/relational_scale.py make --out /tmp/relational [--relevant 10000 --others 500000]
    python benchmarks/relational_scale.py run --data /tmp/relational [--limits 1GB 100MB] [--report PATH]

`make` writes a random dataset in the raw layout (SPEC §2) with many more non-relevant clients than
relevant ones (as the real data: 1M of 18.7M), Zipf-distributed items, then runs ingest and split on it.
`run` measures, each in a fresh process (so its peak RSS is its own): aggregated as of commit BEFORE
(loaded from git) and as now, byte-compared; build_features without a limit and with each --limits
entry, compared by a digest of the output, with the peak size of DuckDB's spill directory (sampled every 0.05 s).
Writes reports/bench/relational_scale.json and .md (with os.getloadavg() beside each timing).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ubp import schema
from ubp.io import save_json, save_text

BEFORE = "4fc2ba2"  # the last commit with aggregated's all-clients grouping
REPORT = Path("reports/bench/relational_scale")
START, END = datetime(2022, 5, 1), datetime(2022, 11, 1)
SHARES = {schema.PAGE_VISIT: 0.62, schema.ADD_TO_CART: 0.15, schema.PRODUCT_BUY: 0.06,
          schema.REMOVE_FROM_CART: 0.05, schema.SEARCH_QUERY: 0.12}  # of all events


def _vectors(rng, n: int) -> pa.Array:
    codes = rng.integers(0, 256, (n, schema.VECTOR_DIM))
    return pa.array(["[" + " ".join(map(str, row)) + "]" for row in codes.tolist()])


def _timestamps(rng, n: int) -> pa.Array:
    seconds = rng.integers(0, int((END - START).total_seconds()), n)
    ts = pa.array(np.datetime64(START, "s") + seconds.astype("timedelta64[s]"))
    return pc.strftime(ts, format="%Y-%m-%d %H:%M:%S")


def make(out: Path, n_relevant: int, n_others: int, per_client: float, seed: int) -> None:
    from ubp.data.ingest import ingest
    from ubp.data.split import split

    rng = np.random.default_rng(seed)
    raw = out / "raw"
    (raw / "input").mkdir(parents=True, exist_ok=True)
    clients = rng.choice(np.arange(1, 50 * (n_relevant + n_others)), n_relevant + n_others, replace=False)
    np.save(raw / "input" / "relevant_clients.npy", np.sort(clients[:n_relevant]).astype(np.int64))
    n_skus, n_urls = 100_000, 1_000_000
    pq.write_table(pa.table({"sku": np.arange(n_skus, dtype=np.int64), "category": rng.integers(0, 2_000, n_skus),
                             "price": rng.integers(0, 100, n_skus), "name": _vectors(rng, n_skus)}),
                   raw / "product_properties.parquet")
    total = int(per_client * len(clients))
    for event, share in SHARES.items():
        n = int(total * share)
        table = {"client_id": clients[rng.integers(0, len(clients), n)], "timestamp": _timestamps(rng, n)}
        if event == schema.PAGE_VISIT:
            table["url"] = (rng.zipf(1.3, n) % n_urls).astype(np.int64)
        elif event == schema.SEARCH_QUERY:
            table["query"] = _vectors(rng, n)
        else:
            table["sku"] = (rng.zipf(1.2, n) % n_skus).astype(np.int64)
        pq.write_table(pa.table(table), raw / f"{event}.parquet")
        print(f"{event}: {n} rows", flush=True)
    ingest(raw, out / "canonical")
    split(out / "canonical", out / "split")


class SpillWatch(threading.Thread):
    """The largest total size of the files under a directory, sampled until stopped."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.peak, self.stop = root, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            size = 0
            for base, _, files in os.walk(self.root):
                for f in files:
                    try:
                        size += os.path.getsize(os.path.join(base, f))
                    except OSError:
                        pass
            self.peak = max(self.peak, size)
            time.sleep(0.05)


def _context(data: Path):
    from ubp.models.base import EmbedContext

    split_info = json.loads((data / "split" / schema.SPLIT_FILE).read_text())
    return EmbedContext(client_ids=np.load(data / "canonical" / schema.RELEVANT_CLIENTS_FILE),
                        events_dir=data / "split" / "input",
                        properties_path=data / "canonical" / f"{schema.PROPERTIES}.parquet",
                        cutoff=datetime.strptime(split_info["train_target_start"], schema.TIMESTAMP_FORMAT))


def measure(what: str, data: Path, limit: str | None) -> dict:
    """One measurement in this process: seconds, peak RSS, output saved for the byte comparison."""
    ctx = _context(data)
    spill = data / "spill" / what / str(limit)
    watch = SpillWatch(spill)
    watch.start()
    start = time.perf_counter()
    if what.startswith("aggregated"):
        if what == "aggregated_before":
            code = subprocess.run(["git", "show", f"{BEFORE}:src/ubp/models/aggregated.py"], capture_output=True,
                                  text=True, check=True).stdout
            path = data / "aggregated_before.py"
            path.write_text(code)
            spec = importlib.util.spec_from_file_location("aggregated_before", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            from ubp.models import aggregated as module
        out = module.embed(ctx, module.Config(windows=(1, 7, 30), top_n=10, threads=2))
    else:
        from ubp.features import build_features
        from ubp.features.build import FeaturesConfig

        table = build_features(ctx.events_dir, ctx.properties_path, ctx.client_ids, ctx.cutoff,
                               FeaturesConfig(threads=1, memory_limit=limit, temp_directory=spill))
        out = [table[c].to_numpy() for c in table.columns]
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    watch.stop.set()
    watch.join()
    digest = hashlib.sha256()  # of the values column by column: no second copy of the output
    for column in (out if isinstance(out, list) else [out]):
        digest.update(np.ascontiguousarray(column).tobytes())
    return {"what": what, "limit": limit, "seconds": round(seconds, 2), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "peak_rss_mb": round(rss, 1), "peak_spill_mb": round(watch.peak / 2**20, 1), "sha256": digest.hexdigest()}


def run(data: Path, limits: list[str], report: Path = REPORT, aggregated: bool = True) -> None:
    plan = ([("aggregated_before", None), ("aggregated", None)] if aggregated else []) + \
        [("features", None)] + [("features", x) for x in limits]
    rows = []
    for what, limit in plan:
        cmd = [sys.executable, __file__, "measure", what, "--data", str(data)] + (["--limit", limit] if limit else [])
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:  # e.g. DuckDB's out-of-memory error under a too tight limit: reported
            error = [line for line in result.stderr.splitlines() if "Error" in line or "Exception" in line]
            rows.append({"what": what, "limit": limit, "error": (error or ["exit %d" % result.returncode])[-1][:200],
                         "loadavg": [round(x, 2) for x in os.getloadavg()]})
        else:
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    for row in rows:
        if "error" in row:
            continue
        ref = "aggregated_before_None" if row["what"].startswith("aggregated") else "features_None"
        first = next(r for r in rows if f"{r['what']}_{r['limit']}" == ref)
        row["same_bytes_as"] = ref if row["sha256"] == first.get("sha256") else "DIFFERENT"
    counts = {e: pq.ParquetFile(data / "split" / "input" / f"{e}.parquet").metadata.num_rows for e in schema.EVENT_TYPES}
    facts = {"relevant": len(np.load(data / "canonical" / schema.RELEVANT_CLIENTS_FILE)),
             "input_events": counts, "rows": rows}
    save_json(report.with_suffix(".json"), facts)
    lines = ["# Relational stages at many non-relevant clients", "",
             f"Made by `python benchmarks/relational_scale.py` on {facts['relevant']} relevant clients and "
             f"{sum(counts.values()):,} input events ({', '.join(f'{k} {v:,}' for k, v in counts.items())}).", "",
             "| run | memory_limit | seconds | peak RSS (MB) | peak spill (MB) | output | load avg |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['what']} | {r['limit'] or '-'} | failed: {r['error']} | | | | {r['loadavg'][0]} |")
            continue
        output = "DIFFERENT" if r["same_bytes_as"] == "DIFFERENT" else "same bytes as " + r["same_bytes_as"]
        lines.append(f"| {r['what']} | {r['limit'] or '-'} | {r['seconds']} | {r['peak_rss_mb']} | "
                     f"{r['peak_spill_mb']} | {output} | {r['loadavg'][0]} |")
    save_text(report.with_suffix(".md"), "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--relevant", type=int, default=10_000)
    p.add_argument("--others", type=int, default=500_000)
    p.add_argument("--per-client", type=float, default=16.0)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("run")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--limits", nargs="*", default=["1GB", "100MB"])
    p.add_argument("--report", type=Path, default=REPORT, help="where the .json and .md go (no suffix)")
    p.add_argument("--no-aggregated", action="store_true", help="measure the features stage only")
    p = sub.add_parser("measure")
    p.add_argument("what")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--limit")
    args = parser.parse_args()
    if args.command == "make":
        make(args.out, args.relevant, args.others, args.per_client, args.seed)
    elif args.command == "run":
        run(args.data, args.limits, args.report, not args.no_aggregated)
    else:
        print(json.dumps(measure(args.what, args.data, args.limit)))


if __name__ == "__main__":
    main()
