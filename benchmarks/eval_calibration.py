"""Seed spread and ranking agreement of the downstream evaluator's network sizes.

    python benchmarks/eval_calibration.py --profiles random aggregated oracle \
        --sizes default official --seeds 1278 1279 42 --out reports/bench/eval_calibration.md
    python benchmarks/eval_calibration.py --profiles features ensemble --seeds 1278 1279 42 1 2 3 4 5 6 7 \
        --paired ensemble features --out reports/bench/ensemble_seeds.md

Run from a pipeline workspace (the repo root after `dvc repro`, or a copy with another data
size): scores each embedding in `embeddings/` (or `combined/`: ensemble, stacked) with every size and evaluator seed, then reports
per task the scores, their spread over seeds, and whether each size ranks the profiles alike.
Raw results go to the same path with a .json suffix, so a run can be resumed/merged.

    cd /work/scale/1.0 && python /path/to/repo/benchmarks/eval_calibration.py --eval-params /path/to/repo/params.yaml \
        --sizes compact --seeds 1278 --from-scale /path/to/repo/reports/bench/scale.json 1.0 --profiles ...

scores a real-size workspace's embeddings with the network sizes of another params file, and takes
the seed-1278 scores of the sizes `benchmarks/scale.py`'s evaluation stages ran at that scale from its
record instead of re-running them. A size `compact@200000` is the compact network scored on a seeded
sample of 200,000 clients (`eval.sample_clients`), `compact:e1` with one epoch (`eval.epochs`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from itertools import combinations
from pathlib import Path

import numpy as np

from ubp import schema
from ubp.evaluate.protocol import EvalConfig
from ubp.evaluate.run import embeddings_root, evaluate_profile
from ubp.params import load_params


def run_all(profiles, sizes, seeds, raw_path: Path, eval_params: Path | None = None) -> dict:
    from scale import machine  # benchmarks/ is this script's directory

    results = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    params = load_params()
    here = machine()
    base = EvalConfig.from_params(load_params(eval_params) if eval_params else params)
    for size in sizes:
        for seed in seeds:
            for profile in profiles:
                key = f"{size}|{seed}|{profile}"
                if key in results:
                    continue
                cfg = evaluator(base, size, seed)
                metrics = evaluate_profile(profile, cfg, embeddings_root(params, profile))
                results[key] = {t: metrics["tasks"][t]["score"] for t in schema.TASKS}
                results[key]["seconds"] = metrics["seconds"]
                results[key]["load"] = round(os.getloadavg()[2], 2)  # 15-minute mean: others sharing the cores
                results[key]["machine"] = here
                raw_path.write_text(json.dumps(results, indent=1))
                logging.info("%s: sum %.4f (%.0f s)", key, sum(results[key][t] for t in schema.TASKS), metrics["seconds"])
    return results


def parse_size(size: str) -> tuple[str, int | None, int | None]:
    """A size name -> (network, sample_clients, epochs): `compact@200000` is the compact network scored
    on a seeded 200k-client sample (eval.sample_clients), `compact:e1` one epoch instead of the
    protocol's three (eval.epochs); None where the name does not say."""
    size, _, epochs = size.partition(":e")
    network, _, sample = size.partition("@")
    return network, int(sample) if sample else None, int(epochs) if epochs else None


def evaluator(base: EvalConfig, size: str, seed: int) -> EvalConfig:
    """`base` with the size name's network, sample and epochs (`parse_size`) and the seed."""
    network, sample, epochs = parse_size(size)
    return dataclasses.replace(base, profile=network, seed=seed, sample_clients=sample, epochs=epochs or base.epochs)


def from_scale(results: dict, scale_json: Path, scale: str, profiles) -> dict:
    """The `<size>|1278|<profile>` rows from the scores and evaluation stages' seconds benchmarks/scale.py
    recorded at `scale` (seed 1278; the size is the stage's `eval.profile`, default unless set). A
    stage run with `eval.sample_clients` is not taken."""
    recorded = json.loads(scale_json.read_text())["scales"][scale]
    for profile in profiles:
        score = recorded.get("scores", {}).get(profile)
        name = next((n for n in (f"evaluate@{profile}", f"evaluate_combined@{profile}") if n in recorded["stages"]), None)
        if score is None or name is None:
            continue
        stage = recorded["stages"][name]
        sets = dict(item.partition("=")[::2] for item in stage.get("params", []))
        if "eval.sample_clients" in sets:
            continue
        results[f"{sets.get('eval.profile', 'default')}|1278|{profile}"] = {
            **score["tasks"], "seconds": stage["seconds"], "load": stage.get("load"), "machine": stage.get("machine"),
            "from": f"{scale_json.name} scale {scale}, commit {score['commit']}"}
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
            if not rows:  # not run with this size: a blank row, left out of the comparisons
                continue
            mean[(size, profile)] = {t: float(np.mean([r[t] for r in rows])) for t in tasks}
            spread[(size, profile)] = {t: float(np.ptp([r[t] for r in rows])) for t in tasks}
    lines = [
        "# Evaluator calibration: seed spread and ranking agreement",
        "",
        f"Evaluator seeds {', '.join(map(str, seeds))}; network sizes {', '.join(sizes)}. "
        "Cells: mean score over the seeds run for that size (range max − min in brackets; 0 with one seed)."
        + (" `<size>@N`: that network scored on a seeded sample of N clients (`eval.sample_clients`, drawn with the "
           "evaluator's seed, so its range includes the sample's); `<size>:eK`: K epochs instead of the protocol's "
           "three (`eval.epochs`)." if any("@" in s or ":e" in s for s in sizes) else ""),
        "",
        *(["Rows taken from benchmarks/scale.py's record (--from-scale), not re-run: "
            + "; ".join(sorted({f"{k.split('|')[0]} {k.split('|')[2]}: {r['from']}" for k, r in results.items()
                                if "from" in r and k.split("|")[2] in profiles})), ""]
          if any("from" in r for r in results.values()) else []),
        "| size | profile | " + " | ".join(tasks) + " | seconds/run |",
        "|---|---|" + "---:|" * (len(tasks) + 1),
    ]
    for size in sizes:
        for profile in profiles:
            if (size, profile) not in mean:
                continue
            cells = [f"{mean[(size, profile)][t]:.4f} ({spread[(size, profile)][t]:.4f})" for t in tasks]
            secs = np.mean([results[k]["seconds"] for k in results if k.startswith(f"{size}|") and k.endswith(f"|{profile}")])
            lines.append(f"| {size} | {profile} | " + " | ".join(cells) + f" | {secs:.0f} |")
    lines += ["", "| size | largest per-task seed range | mean per-task seed range |", "|---|---:|---:|"]
    for size in sizes:
        ranges = [spread[(size, p)][t] for p in profiles for t in schema.TASKS if (size, p) in spread]
        lines.append(f"| {size} | {max(ranges):.4f} | {np.mean(ranges):.4f} |")
    common = [p for p in profiles if all((size, p) in mean for size in sizes)]
    if len(sizes) > 1:
        lines += ["", f"Profile pairs ordered alike by every size (by mean over seeds; the {len(common)} profiles run "
                  "with every size):", "",
                  "| " + " | ".join(tasks) + " |", "|" + "---:|" * len(tasks),
                  "| " + " | ".join(ranking_agreement(mean, common, sizes, t) for t in tasks) + " |"]
        for a, b in combinations(sizes, 2):
            pairs = [p for p in profiles if (a, p) in mean and (b, p) in mean]
            lines.append(f"\n`{a}` and `{b}` on their {len(pairs)} common profiles: sums ordered alike in "
                         f"{ranking_agreement(mean, pairs, (a, b), 'sum')} pairs; per task "
                         + ", ".join(f"{t} {ranking_agreement(mean, pairs, (a, b), t)}" for t in schema.TASKS) + ".")
    for size in sizes:
        order = sorted((p for p in profiles if (size, p) in mean), key=lambda p: mean[(size, p)]["sum"])
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
    parser.add_argument("--eval-params", type=Path, default=None,
                        help="read the eval section (network sizes, seed...) from this params file, not ./params.yaml")
    parser.add_argument("--from-scale", nargs=2, metavar=("SCALE_JSON", "SCALE"), default=None,
                        help="take the default size's seed-1278 scores from benchmarks/scale.py's record of SCALE")
    parser.add_argument("--paired", nargs=2, metavar=("A", "B"), default=None,
                        help="also report the per-seed difference A - B (mean, standard error, wins)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    raw = args.out.with_suffix(".json")
    if args.from_scale:
        merged = from_scale(json.loads(raw.read_text()) if raw.exists() else {}, Path(args.from_scale[0]),
                            args.from_scale[1], args.profiles)
        raw.write_text(json.dumps(merged, indent=1))
    results = json.loads(raw.read_text()) if args.no_run else run_all(args.profiles, args.sizes, args.seeds, raw,
                                                                      args.eval_params)
    text = report(results, args.profiles, args.sizes, args.seeds)
    if args.paired:
        text += "".join(paired(results, *args.paired, size, args.seeds) for size in args.sizes)
    args.out.write_text(text)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
