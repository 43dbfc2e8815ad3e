"""Seed spread and ranking agreement of the downstream evaluator's network sizes.

    python benchmarks/eval_calibration.py --profiles random aggregated oracle \
        --sizes default official --seeds 1278 1279 42 --out reports/bench/eval_calibration.md
    python benchmarks/eval_calibration.py --profiles features ensemble --seeds 1278 1279 42 1 2 3 4 5 6 7 \
        --paired ensemble features --out reports/bench/ensemble_seeds.md

Run from a pipeline workspace (the repo root after `dvc repro`, or a copy with another data
size): scores each embedding in `embeddings/` (or `combined/`: ensemble, stacked) with every size and evaluator seed, then reports
per task the scores, their spread over seeds, and whether each size ranks the profiles alike.
Raw results go to the same path with a .json suffix, so a run can be resumed/merged.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from itertools import combinations
from pathlib import Path

import numpy as np

from ubp import schema
from ubp.evaluate.protocol import EvalConfig
from ubp.evaluate.run import embeddings_root, evaluate_profile
from ubp.params import load_params


def run_all(profiles, sizes, seeds, raw_path: Path) -> dict:
    results = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    params = load_params()
    base = EvalConfig.from_params(params)
    for size in sizes:
        for seed in seeds:
            for profile in profiles:
                key = f"{size}|{seed}|{profile}"
                if key in results:
                    continue
                cfg = dataclasses.replace(base, profile=size, seed=seed)
                metrics = evaluate_profile(profile, cfg, embeddings_root(params, profile))
                results[key] = {t: metrics["tasks"][t]["score"] for t in schema.TASKS}
                results[key]["seconds"] = metrics["seconds"]
                raw_path.write_text(json.dumps(results, indent=1))
                logging.info("%s: sum %.4f (%.0f s)", key, sum(results[key][t] for t in schema.TASKS), metrics["seconds"])
    return results


def ranking_agreement(mean: dict, profiles, sizes, task) -> str:
    """Share of profile pairs ordered the same way by every size."""
    pairs = list(combinations(profiles, 2))
    same = sum(len({np.sign(mean[(s, a)][task] - mean[(s, b)][task]) for s in sizes}) == 1 for a, b in pairs)
    return f"{same}/{len(pairs)}"


def report(results: dict, profiles, sizes, seeds) -> str:
    tasks = list(schema.TASKS) + ["sum"]
    for row in results.values():
        row["sum"] = round(sum(row[t] for t in schema.TASKS), 4)
    mean, spread = {}, {}
    for size in sizes:
        for profile in profiles:
            rows = [results[f"{size}|{seed}|{profile}"] for seed in seeds if f"{size}|{seed}|{profile}" in results]
            mean[(size, profile)] = {t: float(np.mean([r[t] for r in rows])) for t in tasks}
            spread[(size, profile)] = {t: float(np.ptp([r[t] for r in rows])) for t in tasks}
    lines = [
        "# Evaluator calibration: seed spread and ranking agreement",
        "",
        f"Evaluator seeds {', '.join(map(str, seeds))}; network sizes {', '.join(sizes)}. "
        "Cells: mean score over the seeds run for that size (range max − min in brackets; 0 with one seed).",
        "",
        "| size | profile | " + " | ".join(tasks) + " | seconds/run |",
        "|---|---|" + "---:|" * (len(tasks) + 1),
    ]
    for size in sizes:
        for profile in profiles:
            cells = [f"{mean[(size, profile)][t]:.4f} ({spread[(size, profile)][t]:.4f})" for t in tasks]
            secs = np.mean([results[k]["seconds"] for k in results if k.startswith(f"{size}|") and k.endswith(f"|{profile}")])
            lines.append(f"| {size} | {profile} | " + " | ".join(cells) + f" | {secs:.0f} |")
    lines += ["", "| size | largest per-task seed range | mean per-task seed range |", "|---|---:|---:|"]
    for size in sizes:
        ranges = [spread[(size, p)][t] for p in profiles for t in schema.TASKS]
        lines.append(f"| {size} | {max(ranges):.4f} | {np.mean(ranges):.4f} |")
    if len(sizes) > 1:
        lines += ["", "Profile pairs ordered alike by every size (by mean over seeds):", "",
                  "| " + " | ".join(tasks) + " |", "|" + "---:|" * len(tasks),
                  "| " + " | ".join(ranking_agreement(mean, profiles, sizes, t) for t in tasks) + " |"]
    for size in sizes:
        order = sorted(profiles, key=lambda p: mean[(size, p)]["sum"])
        lines.append(f"\nOrder by sum, `{size}`: " + " < ".join(order))
    return "\n".join(lines) + "\n"


def paired(results: dict, a: str, b: str, size: str, seeds) -> str:
    """Per-seed differences a - b (the same evaluator seed trains both: a paired comparison)."""
    keys = [s for s in seeds if f"{size}|{s}|{a}" in results and f"{size}|{s}|{b}" in results]
    if len(keys) < 2:
        return ""
    diff = {t: np.array([results[f"{size}|{s}|{a}"][t] - results[f"{size}|{s}|{b}"][t] for s in keys])
            for t in list(schema.TASKS) + ["sum"]}
    se = lambda d: d.std(ddof=1) / np.sqrt(len(d))
    lines = [f"\n## Paired: {a} − {b} (`{size}`, {len(keys)} evaluator seeds)", "",
             "Both profiles are scored with the same evaluator seed (and the same, unshuffled batches) per row, "
             "so the comparison is paired. Mean difference ± standard error over the seeds; "
             f"wins = seeds on which {a} scores higher.", "",
             "| | " + " | ".join(t.replace("propensity_", "") for t in diff) + " |",
             "|---|" + "---:|" * len(diff),
             "| mean ± SE | " + " | ".join(f"{d.mean():+.4f} ± {se(d):.4f}" for d in diff.values()) + " |",
             "| wins | " + " | ".join(f"{int((d > 0).sum())}/{len(d)}" for d in diff.values()) + " |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["random", "aggregated", "oracle"])
    parser.add_argument("--sizes", nargs="+", default=["default"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1278, 1279, 42])
    parser.add_argument("--out", type=Path, default=schema.BENCH_DIR / "eval_calibration.md")
    parser.add_argument("--no-run", action="store_true", help="only report what the .json already holds")
    parser.add_argument("--paired", nargs=2, metavar=("A", "B"), default=None,
                        help="also report the per-seed difference A - B (mean, standard error, wins)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    raw = args.out.with_suffix(".json")
    results = json.loads(raw.read_text()) if args.no_run else run_all(args.profiles, args.sizes, args.seeds, raw)
    text = report(results, args.profiles, args.sizes, args.seeds)
    if args.paired:
        text += "".join(paired(results, *args.paired, size, args.seeds) for size in args.sizes)
    args.out.write_text(text)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
