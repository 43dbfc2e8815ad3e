"""Training cost of every trained profile: seconds per epoch, training samples per second, peak memory.

    python benchmarks/training_costs.py [--costs reports/bench/repro_costs.md] [--out reports/bench/training_costs.md]

Reads the log and the .json that `benchmarks/repro_costs.py` wrote (run that first, on an
otherwise idle machine: the figures are those of that run): each embed stage's epoch lines
("<method> epoch i/n: ..., <seconds> s") and its peak memory; the number of training clients comes
from the profile's meta.json in this checkout (it does not depend on the machine). Samples per second = training clients x epochs / training seconds (one
sample = one client's sequence or row per epoch; validation passes are in the epoch time).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ubp.io import save_text  # noqa: E402
from ubp.params import load_params, profile_dir, profile_names  # noqa: E402

STAGE = re.compile(r"Running stage '(?:embed|combine)@([^']+)'")
EPOCH = re.compile(r" epoch (\d+)/\d+: .*?([\d.]+) s\b")


def epoch_seconds(log: Path) -> dict[str, list[float]]:
    """profile -> seconds of each epoch, from a repro_costs log."""
    out: dict[str, list[float]] = {}
    current = None
    for line in log.read_text().splitlines():
        stage = STAGE.search(line)
        if stage:
            current = stage.group(1)
            continue
        if line.lstrip().split(" ", 1)[-1].startswith("Running stage"):
            current = None
        epoch = EPOCH.search(line)
        if current and epoch:
            out.setdefault(current, []).append(float(epoch.group(2)))
    return out


def stage_costs(path: Path) -> dict[str, tuple[float, float]]:
    """profile -> (stage wall seconds, peak MB) from the .json that repro_costs.py writes beside its table."""
    stages = json.loads(path.with_suffix(".json").read_text())["stages"]
    return {name.split("@", 1)[1]: (row["seconds"], row["peak_mb"]) for name, row in stages.items()
            if name.startswith(("embed@", "combine@"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--costs", type=Path, default=Path("reports/bench/repro_costs.md"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench/training_costs.md"))
    args = parser.parse_args()
    params = load_params()
    costs = stage_costs(args.costs)
    seconds = epoch_seconds(args.costs.with_suffix(".log"))
    rows = []
    for name in profile_names(params):
        if name not in seconds:
            continue
        meta = json.loads((Path(profile_dir(params, name)) / "meta.json").read_text())
        train_seconds, epochs = sum(seconds[name]), len(seconds[name])
        n_train = int(meta.get("n_train", 0))
        stage_s, peak = costs.get(name, (float("nan"), float("nan")))
        rows.append((name, meta.get("method", name), meta.get("dim"), n_train, epochs, train_seconds / epochs,
                     n_train * epochs / train_seconds if train_seconds else float("nan"), stage_s, peak))
    lines = [
        "# Training costs",
        "",
        f"From the log and stage figures (.json) of `{args.costs}` (epoch times; stage wall time and peak memory "
        "of the stage's processes) and the profiles' meta.json. Made by `python benchmarks/training_costs.py` "
        "after `python benchmarks/repro_costs.py`.",
        "",
        "| profile | method | dims | training clients | epochs | s / epoch | samples / s | stage (s) | peak memory (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {n} | {m} | {d} | {t} | {e} | {spe:.1f} | {sps:.0f} | {st:.1f} | {pk:.0f} |"
          for n, m, d, t, e, spe, sps, st, pk in rows],
    ]
    save_text(args.out, "\n".join(lines) + "\n")  # atomic: temp file, then rename
    print("\n".join(lines))


if __name__ == "__main__":
    main()
