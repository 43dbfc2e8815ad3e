"""Two fresh clones, two `dvc repro` of the tiny graph: the md5 of every output side by side ->
reports/bench/determinism.{md,json}.

    python benchmarks/determinism.py [--workdir DIR]

What tests/test_pipeline.py::test_two_fresh_runs_agree_to_the_byte asserts in CI (#16 part 6), with
the hashes written down: every stage's data, every profile's embedding, every score (wall times
removed: tests/conftest.graph_outputs) and the leaderboard.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cross_cpu import cpu_model  # noqa: E402  (benchmarks/ is this script's directory)
from runs import scratch_and_commit  # noqa: E402
from tests.conftest import GIT_ENV, graph_outputs, tiny_repo  # noqa: E402
from ubp import schema  # noqa: E402
from ubp.io import save_json, save_text  # noqa: E402

OUT = schema.BENCH_DIR / "determinism"


def run(root: Path) -> dict[str, str]:
    root.mkdir(parents=True)
    tiny_repo(root)
    done = subprocess.run(["dvc", "repro"], cwd=root, env={**os.environ, **GIT_ENV}, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"dvc repro failed in {root}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {rel: hashlib.md5(data).hexdigest() for rel, data in graph_outputs(root).items()}


def markdown(result: dict) -> str:
    first, second = result["runs"]
    lines = ["# Two fresh runs of the tiny graph, byte for byte", "",
             f"Made by `python benchmarks/determinism.py` at commit {result['commit']} on {result['cpu']}: two "
             "fresh clones (tests/conftest.tiny_repo), `dvc repro` in each, the md5 of every output (metrics "
             "without their wall times). Embeddings and scores:", "",
             "| output | run 1 | run 2 | equal |", "|---|---|---|---|"]
    for rel in sorted(set(first) | set(second)):
        if rel.endswith("embeddings.npy") or (rel.startswith("metrics/") and rel.endswith(".json")) \
                or rel.startswith("reports/leaderboard"):
            a, b = first.get(rel, "-"), second.get(rel, "-")
            lines.append(f"| {rel} | {a[:12]} | {b[:12]} | {'yes' if a == b else '**no**'} |")
    same = sum(first.get(rel) == second.get(rel) for rel in set(first) | set(second))
    lines += ["", f"All outputs: {same} of {len(set(first) | set(second))} files equal "
              f"({result['seconds'][0]:.0f} s and {result['seconds'][1]:.0f} s)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    root, commit = scratch_and_commit(__doc__.splitlines()[0], "ubp-determinism-")
    runs, seconds = [], []
    for i in (1, 2):
        started = time.perf_counter()
        runs.append(run(root / f"run{i}"))
        seconds.append(time.perf_counter() - started)
        print(f"run {i}: {len(runs[-1])} outputs in {seconds[-1]:.0f} s", flush=True)
    result = {"commit": commit, "cpu": cpu_model(), "runs": runs, "seconds": seconds}
    save_json(OUT.with_suffix(".json"), result)
    save_text(OUT.with_suffix(".md"), markdown(result))
    print(f"{sum(runs[0].get(k) == runs[1].get(k) for k in set(runs[0]) | set(runs[1]))} of "
          f"{len(set(runs[0]) | set(runs[1]))} outputs equal -> {OUT.with_suffix('.md')}")


if __name__ == "__main__":
    main()
