"""What `dvc exp run -S model.hidden=W` costs: one epoch of each neural profile at two widths.

    python benchmarks/width_costs.py [--widths 128 512] [--out reports/bench/width_costs.md]

Each neural profile of params.yaml (those inheriting `model:`) is embedded with its own settings
but `hidden` = each width and 1 epoch, from the stored sequences and features of the default
data (run `dvc repro` first; they hold every relevant client, so no subset), in this process, one
after the other: wall time of that epoch plus the read-out of the clients. The ratio between widths,
times the stage's time in reports/bench/repro_costs.md, estimates the experiment's training time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

from ubp import embed as E
from ubp.io import save_text
from ubp.params import load_params, model_config, profile_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--costs", type=Path, default=Path("reports/bench/repro_costs.md"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench/width_costs.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params()
    stage = {}
    if args.costs.with_suffix(".json").exists():  # written by benchmarks/repro_costs.py beside its table
        stages = json.loads(args.costs.with_suffix(".json").read_text())["stages"]
        stage = {name.split("@", 1)[1]: row["seconds"] for name, row in stages.items() if name.startswith("embed@")}
    names = [n for n in profile_names(params) if (params.get("models") or {}).get(n, {}).get("inherits") == "model"]
    rows = []
    for name in names:
        cfg = model_config(params, name)
        ctx = E.params_context(params)
        seconds = []
        for width in args.widths:
            run_cfg = dataclasses.replace(cfg, hidden=width, epochs=1)
            start = time.perf_counter()
            E.compute(name, run_cfg, dataclasses.replace(ctx, info={}))
            seconds.append(time.perf_counter() - start)
            print(f"{name:14s} hidden {width:5d}: {seconds[-1]:7.1f} s ({len(ctx.client_ids)} clients)", flush=True)
        rows.append((name, seconds, len(ctx.client_ids)))
    w0, w1 = args.widths[0], args.widths[-1]
    lines = [
        f"# Cost of the neural profiles' width: hidden {w0} vs {w1}",
        "",
        f"One epoch plus the read-out of every relevant client of the default data (`clients`), "
        "each profile's own settings otherwise, 2 cores, nothing else running. `estimated stage` = "
        f"the stage's time at hidden {w0} in `{args.costs}` x the ratio. Made by "
        "`python benchmarks/width_costs.py`.",
        "",
        "| profile | clients | " + " | ".join(f"hidden {w} (s)" for w in args.widths) + f" | ratio {w1}/{w0} | "
        f"stage at {w0} (s) | estimated stage at {w1} (min) |",
        "|---|" + "---:|" * (len(args.widths) + 4),
    ]
    total = 0.0
    for name, seconds, n_clients in rows:
        ratio = seconds[-1] / seconds[0]
        base = stage.get(name, float("nan"))
        total += base * ratio if base == base else 0.0
        lines.append(f"| {name} | {n_clients} | " + " | ".join(f"{s:.1f}" for s in seconds)
                     + f" | {ratio:.1f} | {base:.1f} | {base * ratio / 60:.1f} |")
    lines.append("| **all** | | " + "| " * len(args.widths) + f"| {sum(stage.get(r[0], 0.0) for r in rows):.1f} | "
                 f"**{total / 60:.1f}** |")
    save_text(args.out, "\n".join(lines) + "\n")  # atomic: temp file, then rename
    print("\n".join(lines))


if __name__ == "__main__":
    main()
