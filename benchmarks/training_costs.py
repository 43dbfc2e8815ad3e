"""Training cost of every trained profile: seconds per epoch, training samples per second, peak memory.

    python benchmarks/training_costs.py [--costs reports/repro_costs.md] [--out reports/training_costs.md]

Reads what the embed stages recorded (`<profile dir>/meta.json`: n_train, epochs_run, seconds;
`training_curve.csv`: seconds per epoch) and the stage's peak memory from the table that
`benchmarks/repro_costs.py` wrote, so run that first, on an otherwise idle machine: the figures
are those of that run. Samples per second = training clients x epochs / training seconds (one
sample = one client's sequence or row per epoch; validation passes are in the epoch time).
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ubp.params import load_params, profile_dir, profile_names  # noqa: E402

ROW = re.compile(r"^\| (embed@|combine@)(\S+) \| ([\d.]+) \| (\d+) \|$")


def stage_costs(path: Path) -> dict[str, tuple[float, float]]:
    """profile -> (stage wall seconds, peak MB) from a repro_costs.md table."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            found = ROW.match(line.strip())
            if found:
                out[found.group(2)] = (float(found.group(3)), float(found.group(4)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--costs", type=Path, default=Path("reports/repro_costs.md"))
    parser.add_argument("--out", type=Path, default=Path("reports/training_costs.md"))
    args = parser.parse_args()
    params = load_params()
    costs = stage_costs(args.costs)
    rows = []
    for name in profile_names(params):
        directory = Path(profile_dir(params, name))
        curve_path = directory / "training_curve.csv"
        if not curve_path.exists():
            continue
        meta = json.loads((directory / "meta.json").read_text())
        with curve_path.open() as f:
            curve = list(csv.DictReader(f))
        epoch_seconds = [float(r["seconds"]) for r in curve if r.get("seconds")]
        train_seconds = sum(epoch_seconds)
        n_train = int(meta.get("n_train", 0))
        epochs = len(curve)
        stage_s, peak = costs.get(name, (float("nan"), float("nan")))
        rows.append((name, meta.get("method", name), meta.get("dim"), n_train, epochs,
                     train_seconds / max(epochs, 1), n_train * epochs / train_seconds if train_seconds else float("nan"),
                     float(meta.get("seconds", float("nan"))), stage_s, peak))
    lines = [
        "# Training costs",
        "",
        f"From the profiles' meta.json and training curves, and the stage table in `{args.costs}` "
        "(peak memory of the embed stage's processes). Made by `python benchmarks/training_costs.py` "
        "after `python benchmarks/repro_costs.py`.",
        "",
        "| profile | method | dims | training clients | epochs | s / epoch | samples / s | embed (s) | stage (s) | peak memory (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {n} | {m} | {d} | {t} | {e} | {spe:.1f} | {sps:.0f} | {emb:.1f} | {st:.1f} | {pk:.0f} |"
          for n, m, d, t, e, spe, sps, emb, st, pk in rows],
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
