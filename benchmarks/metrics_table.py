"""Two runs' task scores side by side, per profile: what `dvc metrics diff` shows, as one table.

    python benchmarks/metrics_table.py OLD NEW [--profiles a b ...] [--intro TEXT] --out reports/x.md

OLD and NEW are each a directory holding `<profile>.json` metrics (e.g. an experiment workspace's
`metrics/`) or a git revision of this repository (its committed `metrics/<profile>.json`). Profiles
default to those present in both.
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from ubp import schema
from ubp.io import UbpError, save_text


def load(source: str, profile: str) -> dict | None:
    path = Path(source) / f"{profile}.json"
    if Path(source).is_dir():
        return json.loads(path.read_text()) if path.exists() else None
    shown = subprocess.run(["git", "show", f"{source}:{schema.METRICS_DIR}/{profile}.json"],
                           capture_output=True, text=True)
    return json.loads(shown.stdout) if shown.returncode == 0 else None


def names(source: str) -> set[str]:
    if Path(source).is_dir():
        return {p.stem for p in Path(source).glob("*.json")}
    listed = subprocess.run(["git", "ls-tree", "--name-only", f"{source}:{schema.METRICS_DIR}"],
                            capture_output=True, text=True)
    if listed.returncode != 0:
        raise UbpError(f"{source}: neither a directory nor a git revision with {schema.METRICS_DIR}/")
    return {Path(n).stem for n in listed.stdout.split()}


def table(old: str, new: str, profiles: list[str]) -> list[str]:
    short = [t.replace("propensity_", "") for t in schema.TASKS]
    lines = ["| profile | " + " | ".join(short) + " | sum old | sum new | change |",
             "|---|" + "---:|" * (len(short) + 3)]
    for name in profiles:
        a, b = load(old, name), load(new, name)
        if not a or not b or "tasks" not in a or "tasks" not in b:
            continue  # skipped profiles carry no scores
        cells = [f"{a['tasks'][t]['score']:.4f} → {b['tasks'][t]['score']:.4f}" for t in schema.TASKS]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {a['sum']:.4f} | {b['sum']:.4f} | {b['sum'] - a['sum']:+.4f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--profiles", nargs="+")
    parser.add_argument("--title", default="Task scores of two runs")
    parser.add_argument("--intro", default="")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    profiles = args.profiles or sorted(names(args.old) & names(args.new))
    rows = table(args.old, args.new, profiles)
    text = [f"# {args.title}", ""] + ([args.intro, ""] if args.intro else []) + [
        f"Cells: score in `{args.old}` → in `{args.new}`. Made by `python benchmarks/metrics_table.py`.", ""]
    save_text(args.out, "\n".join(text + rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
