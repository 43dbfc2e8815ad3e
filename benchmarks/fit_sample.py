"""Neural profiles fitted on a seeded sample of clients (`model.fit_clients`) vs on all of them.

    python benchmarks/fit_sample.py --profiles contrastive gru_ae_day dcn --samples all 4000 4000x3 \
        --seeds 1278 1279 42 --timing rcae dcn gru_ae_day next_event contrastive --out reports/bench/fit_sample.md

Run from a pipeline workspace after `dvc repro features sequences`. For each profile and sample size
(`4000x3`: 4,000 clients and three times the epochs, i.e. about as many optimizer steps as all 12,000)
it embeds every client (each run in its own process, for its peak memory) into
`embeddings/<profile>_fit<size>/`, scores it with the fixed evaluator at each evaluator seed, and
reports the six-task sums beside the evaluator's seed range. `--timing` runs one epoch of each
named profile on `--timing-clients` clients to give the epoch cost per 1,000 fitted clients and
its extrapolation to the real data's million. Raw results go to the same path with a .json suffix
(a rerun reuses the rows it has). Timings are disturbed by whatever else runs: os.getloadavg() is
recorded beside each.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ubp import schema
from ubp.io import save_text

REAL_CLIENTS = 1_000_000
FITTED_METHODS = ("rcae", "dcn", "gru_ae", "next_event", "contrastive")  # the methods that honour fit_clients


def variant(profile: str, sample: str) -> str:
    return f"{profile}_fit{sample}"


def embed_one(profile: str, sample: str, epochs: int | None, out: Path) -> None:
    """Child process: embed `profile` with fit_clients = sample, write it, print its costs as JSON."""
    from ubp.embed import compute, params_context, split_curve
    from ubp.profile_store import write
    from ubp.params import load_params, model_config

    params = load_params()
    cfg = model_config(params, profile)
    size, _, times = sample.partition("x")  # "4000x3": 4,000 clients, 3x the epochs (as many steps as all 12,000)
    cfg = dataclasses.replace(cfg, fit_clients=None if size == "all" else int(size),
                              epochs=epochs if epochs is not None else cfg.epochs * int(times or 1))
    ctx = params_context(params)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    matrix = compute(profile, cfg, ctx)
    seconds = time.perf_counter() - start
    info = dict(ctx.info)
    curve = info.pop("curve", [])
    if out is not None:
        write(out, ctx.client_ids, {"profile": profile, "fit_clients": cfg.fit_clients, **info}, matrix,
              curve=split_curve(curve)[0])
    fitted = int(info.get("n_train", 0)) + int(info.get("n_val", 0))
    train_seconds = sum(float(row["seconds"]) for row in curve)
    print(json.dumps({"seconds": round(seconds, 2), "train_seconds": round(train_seconds, 2),
                      "epochs_run": len(curve), "best_epoch": info.get("best_epoch"), "fitted": fitted,
                      "clients": int(len(ctx.client_ids)), "epoch_seconds": [row["seconds"] for row in curve],
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)]}))


def run_child(profile: str, sample: str, epochs: int | None, out: Path | None) -> dict:
    cmd = [sys.executable, __file__, "--child", profile, sample, str(epochs or 0), str(out or "")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{profile} fit {sample} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def evaluate(name: str, seed: int) -> dict:
    from ubp.evaluate.protocol import EvalConfig
    from ubp.evaluate.run import evaluate_profile
    from ubp.params import load_params

    cfg = dataclasses.replace(EvalConfig.from_params(load_params()), seed=seed)
    metrics = evaluate_profile(name, cfg, schema.EMBEDDINGS_DIR)
    return {t: metrics["tasks"][t]["score"] for t in schema.TASKS}


def collect(args, raw_path: Path) -> dict:
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    raw.setdefault("embed", {})
    raw.setdefault("scores", {})
    raw.setdefault("timing", {})
    save = lambda: raw_path.write_text(json.dumps(raw, indent=1))  # noqa: E731
    for profile in args.profiles:
        for sample in args.samples:
            name = variant(profile, sample)
            if name not in raw["embed"]:
                raw["embed"][name] = run_child(profile, sample, None, schema.EMBEDDINGS_DIR / name)
                save()
                logging.info("%s: %s", name, raw["embed"][name])
            for seed in args.seeds:
                key = f"{name}|{seed}"
                if key not in raw["scores"]:
                    raw["scores"][key] = evaluate(name, seed)
                    save()
                    logging.info("%s: sum %.4f", key, sum(raw["scores"][key].values()))
    for profile in args.timing:
        if profile not in raw["timing"]:
            raw["timing"][profile] = run_child(profile, str(args.timing_clients), 1, None)
            save()
            logging.info("timing %s: %s", profile, raw["timing"][profile])
    return raw


def score_table(raw: dict, args) -> list[str]:
    lines = ["| profile | fitted on | " + " | ".join(schema.TASKS) + " | sum | range of sum over seeds | "
             "sum − all | embed s | epochs (best) |", "|---" * (len(schema.TASKS) + 7) + "|"]
    for profile in args.profiles:
        base = None
        for sample in args.samples:
            name = variant(profile, sample)
            rows = [raw["scores"][f"{name}|{s}"] for s in args.seeds if f"{name}|{s}" in raw["scores"]]
            if not rows:
                continue
            sums = [sum(r.values()) for r in rows]
            mean = {t: np.mean([r[t] for r in rows]) for t in schema.TASKS}
            total = float(np.mean(sums))
            base = total if sample == "all" else base
            diff = "" if base is None or sample == "all" else f"{total - base:+.4f}"
            e = raw["embed"][name]
            lines.append(f"| {profile} | {e['fitted']:,} | " + " | ".join(f"{mean[t]:.4f}" for t in schema.TASKS)
                         + f" | {total:.4f} | {max(sums) - min(sums):.4f} | {diff} | {e['seconds']:.0f} | "
                         f"{e['epochs_run']} ({e['best_epoch']}) |")
    return lines


def paired_table(raw: dict, args) -> list[str]:
    """Per evaluator seed, sample minus all (the evaluator's noise cancels in part when paired), beside
    the range of the all-clients sum over the seeds: a mean difference inside it is within the noise."""
    lines = ["| profile | fitted on | " + " | ".join(f"seed {s}" for s in args.seeds)
             + " | mean | all's range over seeds | within the range? |", "|---" * (len(args.seeds) + 5) + "|"]
    for profile in args.profiles:
        base = [raw["scores"].get(f"{variant(profile, 'all')}|{seed}") for seed in args.seeds]
        base_sums = [sum(b.values()) for b in base if b]
        spread = max(base_sums) - min(base_sums) if base_sums else float("nan")
        for sample in args.samples:
            if sample == "all":
                continue
            if not any(f"{variant(profile, sample)}|{seed}" in raw["scores"] for seed in args.seeds):
                continue
            diffs = []
            for seed, b in zip(args.seeds, base):
                a = raw["scores"].get(f"{variant(profile, sample)}|{seed}")
                diffs.append(sum(a.values()) - sum(b.values()) if a and b else float("nan"))
            mean = float(np.nanmean(diffs)) if not np.isnan(diffs).all() else float("nan")
            verdict = "" if np.isnan(mean) else ("yes" if abs(mean) <= spread else "no")
            lines.append(f"| {profile} | {sample} | " + " | ".join(f"{d:+.4f}" for d in diffs)
                         + f" | {mean:+.4f} | {spread:.4f} | {verdict} |")
    return lines


def timing_table(raw: dict, args) -> list[str]:
    """Seconds per epoch per 1,000 fitted clients, from every run (its epochs' mean), extrapolated."""
    lines = ["| profile | run | clients fitted | mean epoch s | s per epoch per 1k clients | epoch at 1M (h) | "
             f"epoch at {args.real_sample:,} (min) | embed all {REAL_CLIENTS:,} (h, est.) | peak RSS MB | load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    runs = [(p, "timing", t) for p, t in raw["timing"].items()] + \
        [(name.rsplit("_fit", 1)[0], name.rsplit("_fit", 1)[1], t) for name, t in raw["embed"].items()]
    for profile, run, t in sorted(runs, key=lambda r: r[0]):
        epoch = t["train_seconds"] / max(t["epochs_run"], 1)
        per_k = epoch / max(t["fitted"], 1) * 1000
        other = max(t["seconds"] - t["train_seconds"], 0.0)  # loading + the embedding pass over every client
        lines.append(f"| {profile} | {run} | {t['fitted']:,} | {epoch:.1f} | {per_k:.2f} | "
                     f"{per_k * REAL_CLIENTS / 1000 / 3600:.2f} | {per_k * args.real_sample / 1000 / 60:.1f} | "
                     f"{other / t['clients'] * REAL_CLIENTS / 3600:.2f} | {t['peak_rss_mb']:.0f} | "
                     f"{t['loadavg'][0]:.1f}→{t['loadavg'][1]:.1f} |")
    return lines


def quiet_table(args) -> list[str]:
    """Epoch and stage costs of the last quiet fresh-clone run (repro_costs log/json, via training_costs.py),
    per 1,000 clients of its data, extrapolated to 1M clients fitted on all vs on the sample."""
    from training_costs import epoch_seconds, stage_costs  # benchmarks/ is on sys.path when run as a script
    from ubp.params import load_params, profile_method

    params = load_params()
    epochs, stages = epoch_seconds(args.costs.with_suffix(".log")), stage_costs(args.costs)
    lines = [f"| profile | epochs | s per epoch (12k clients) | s per epoch per 1k clients | training at 1M, all (h) | "
             f"training at 1M, {args.real_sample:,} fitted (min) | rest of the stage at 1M (min, est.) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for profile, secs in epochs.items():
        if profile not in stages or profile_method(params, profile) not in FITTED_METHODS:
            continue
        n_epochs, epoch = len(secs), float(np.mean(secs))
        per_k = epoch / (args.data_clients / 1000)
        rest = max(stages[profile][0] - sum(secs), 0.0)  # load + input + the embedding pass over every client
        lines.append(f"| {profile} | {n_epochs} | {epoch:.1f} | {per_k:.2f} | "
                     f"{per_k * n_epochs * REAL_CLIENTS / 1000 / 3600:.2f} | "
                     f"{per_k * n_epochs * args.real_sample / 1000 / 60:.1f} | "
                     f"{rest / args.data_clients * REAL_CLIENTS / 60:.0f} |")
    return lines


def report(raw: dict, args) -> str:
    out = ["# Neural profiles fitted on a sample of clients (`model.fit_clients`)", "",
           f"Made by `python benchmarks/fit_sample.py {' '.join(sys.argv[1:])}` on the default data "
           f"({next(iter(raw['embed'].values()), {}).get('clients', '?'):,} clients). Each row: the network fitted on "
           "all clients or on a seeded sample (its held-out 10% for early stopping taken inside the sample), every "
           "client embedded, scored by the fixed evaluator at seeds " + ", ".join(map(str, args.seeds))
           + " (cells: mean over the seeds).", ""]
    out += score_table(raw, args) + ["", "Sample minus all, paired by evaluator seed (sum of the six tasks):", ""]
    out += paired_table(raw, args)
    out += ["", f"Epoch cost per run (`timing`: one epoch on {args.timing_clients:,} sampled clients; the other rows "
            "are the runs above; load average before→after: 2 cores shared with other jobs, so the seconds are upper "
            "bounds). Extrapolated linearly in clients fitted; 'embed all' = the run's time outside its epochs "
            "(loading, the input table or sequences, one inference pass over every client) scaled to 1M clients.", ""]
    out += timing_table(raw, args)
    if args.costs.with_suffix(".log").exists():
        out += ["", f"The same extrapolation from the quiet fresh-clone run `{args.costs}` (2 cores, nothing else "
                "running; its epochs as in params.yaml, early stopping included; per 1k of its "
                f"{args.data_clients:,} clients):", ""]
        out += quiet_table(args)
    return "\n".join(out) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        profile, sample, epochs, out = sys.argv[2:6]
        embed_one(profile, sample, int(epochs) or None, Path(out) if out else None)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["contrastive", "gru_ae_day", "dcn"])
    parser.add_argument("--samples", nargs="+", default=["all", "4000"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1278, 1279, 42])
    parser.add_argument("--timing", nargs="*", default=["rcae", "dcn", "gru_ae_day", "next_event", "contrastive"])
    parser.add_argument("--timing-clients", type=int, default=3000)
    parser.add_argument("--real-sample", type=int, default=100_000, help="the sample size a 1M-client run would fit on")
    parser.add_argument("--costs", type=Path, default=Path("reports/bench/repro_costs.md"),
                        help="a quiet repro_costs run (its .log and .json) to extrapolate from")
    parser.add_argument("--data-clients", type=int, default=12_000, help="clients of the data that run had")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/fit_sample.md"))
    parser.add_argument("--report-only", action="store_true", help="write the report from the .json, run nothing")
    args = parser.parse_args()
    if "all" in args.samples:  # the reference row first
        args.samples = ["all"] + [s for s in args.samples if s != "all"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    raw_path = args.out.with_suffix(".json")
    raw = json.loads(raw_path.read_text()) if args.report_only else collect(args, raw_path)
    save_text(args.out, report(raw, args))
    print(report(raw, args))


if __name__ == "__main__":
    main()
