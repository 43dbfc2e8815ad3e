"""Total and per-stage wall time and peak memory of a real `dvc repro` (or `dvc exp run ...`).

    python benchmarks/repro_costs.py [--workdir DIR] [--out reports/bench/repro_costs.md] [-- dvc exp run -S model.hidden=512]

Writes the table to --out, the same figures to its .json (what training_costs.py and
width_costs.py read) and the command's output to its .log. Without --workdir, clones the current commit into a temporary directory (no DVC cache, no
outputs), so the figure is "from scratch on a fresh checkout". Stage boundaries come from DVC's
"Running stage '<name>':" lines; memory is the summed RSS of DVC's child processes (the stage's
command), sampled every 0.2 s. The lines of the command's own output are kept in a log next to
the report.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from ubp.io import save_json, save_text

STAGE_LINE = re.compile(r"Running stage '([^']+)'")


class Sampler(threading.Thread):
    """Peak summed RSS of a process's descendants, and the machine's mean 1-minute load, per stage label."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.stage: str | None = None
        self.peaks: dict[str, float] = {}
        self.loads: dict[str, list[float]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            try:
                kids = self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            rss = 0
            for kid in kids:
                try:
                    rss += kid.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            if self.stage is not None:
                self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), rss / 2**20)
                self.loads.setdefault(self.stage, []).append(os.getloadavg()[0])

    def load(self, stage: str) -> float:
        """Mean 1-minute load average while the stage ran: above the core count, its wall time is disturbed."""
        values = self.loads.get(stage) or [os.getloadavg()[0]]
        return round(sum(values) / len(values), 1)


def run(command: list[str], workdir: Path, log_path: Path) -> tuple[list[tuple[str, float, float]], float]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
    start = time.time()
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    sampler = Sampler(proc.pid)
    sampler.start()
    order: list[tuple[str, float]] = []
    with log_path.open("w", buffering=1) as log:  # line-buffered: follow it with tail -f
        for line in proc.stdout:
            log.write(f"{time.time() - start:8.1f} {line}")
            found = STAGE_LINE.search(line)
            if found:
                order.append((found.group(1), time.time()))
                sampler.stage = found.group(1)
    code = proc.wait()
    end = time.time()
    sampler.done.set()
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code}); see {log_path}")
    rows = []
    for i, (name, began) in enumerate(order):
        finished = order[i + 1][1] if i + 1 < len(order) else end
        rows.append((name, finished - began, sampler.peaks.get(name, 0.0)))
    return rows, end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="run in this checkout (default: a fresh clone of HEAD)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/repro_costs.md"))
    parser.add_argument("command", nargs="*", help="default: dvc repro")
    args = parser.parse_args()
    command = args.command or ["dvc", "repro"]
    out = args.out.resolve()
    with tempfile.TemporaryDirectory(prefix="ubp-repro-") as tmp:
        workdir = args.workdir
        if workdir is None:
            workdir = Path(tmp) / "main"
            subprocess.run(["git", "clone", "-q", str(Path.cwd()), str(workdir)], check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=workdir, capture_output=True,
                                text=True, check=True).stdout.strip()
        rows, total = run(command, workdir, out.with_suffix(".log"))
    lines = [
        f"# Costs of `{' '.join(command)}`",
        "",
        f"{'A fresh clone' if args.workdir is None else 'The checkout'} of commit {commit}, "
        f"{os.cpu_count()} cores, nothing else running. Wall time per stage from DVC's stage lines "
        "(includes DVC's hashing and caching of the stage's outputs); peak summed RSS of the "
        "stage's processes. Made by `python benchmarks/repro_costs.py`.",
        "",
        "| stage | wall time (s) | peak memory (MB) |",
        "|---|---:|---:|",
        *[f"| {n} | {s:.1f} | {m:.0f} |" for n, s, m in rows],
        f"| **total** (`{' '.join(command)}`, {total / 60:.1f} min) | **{total:.1f}** | "
        f"**{max((r[2] for r in rows), default=0):.0f}** |",
    ]
    save_text(out, "\n".join(lines) + "\n")  # atomic: temp file, then rename
    # The same figures for scripts (benchmarks/training_costs.py, width_costs.py): no table parsing.
    save_json(out.with_suffix(".json"), {
        "command": command, "commit": commit, "fresh_clone": args.workdir is None, "cores": os.cpu_count(),
        "total_seconds": round(total, 1),
        "stages": {n: {"seconds": round(s, 1), "peak_mb": round(m)} for n, s, m in rows}})
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
