"""Kill a stage of the tiny graph at a point of its write, run `dvc repro` again, compare (#16 part 1).

Two scenarios. `dvc`: something a stage depends on changed (here a comment appended to its code,
which DVC hashes but Python does not run: the installed package runs), `dvc repro` starts it and the
machine stops — `UBP_FAULT` makes ubp.io SIGKILL the whole process group, DVC included, at the named
point; the user runs `dvc repro` again. `hand`: the user runs the stage's command by hand over its
existing output, it is killed, they run it again (then `dvc repro`, which must find nothing to do).
Either way the run must complete, give exactly the bytes of an uninterrupted run, and leave none of
the killed write's temporaries (`.<name>.old`, `.<name>.*.tmp`). DVC deletes a stage's outputs
before it runs it, so under DVC a directory is never swapped: `between` exists only by hand, on a
system without RENAME_EXCHANGE (forced with UBP_NO_EXCHANGE=1).
Used by tests/test_kill.py (a few cases) and benchmarks/kill_matrix.py (every stage x point).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ubp.io import FAULT_ENV, STALE
from tests.conftest import GIT_ENV, graph_outputs, tiny_repo

# What the harness runs: the data stages, one profile and its evaluation (every kind of write).
TARGETS = ("features", "sequences", "evaluate@aggregated")
PROFILES = {"aggregated", "random"}  # the graph keeps these models only (and combined profiles over aggregated)


@dataclass(frozen=True)
class Case:
    stage: str  # a DVC stage
    dep: str  # a code file it depends on (a comment appended makes DVC re-run it)
    output: str  # the name of the output whose write is killed
    point: str  # ubp.io's fault point: written | between | replaced
    runner: str = "dvc"  # dvc | hand


STAGES = {  # stage -> (its own code dep, the output written through atomic_dir/atomic_path)
    "generate": ("src/ubp/data/synthetic_output.py", "synthetic"),
    "ingest": ("src/ubp/data/ingest.py", "canonical"),
    "split": ("src/ubp/data/split.py", "split"),
    "targets": ("src/ubp/data/targets.py", "targets"),
    "features": ("src/ubp/features/build.py", "features"),
    "sequences": ("src/ubp/sequences.py", "sequences"),
    "embed@aggregated": ("src/ubp/models/aggregated.py", "aggregated"),
    "evaluate@aggregated": ("src/ubp/evaluate/run.py", "aggregated.json"),
}
FILE_OUTPUTS = {"aggregated.json"}  # written by atomic_path: no `between` (one rename)


def all_cases() -> list[Case]:
    cases = []
    for stage, (dep, output) in STAGES.items():
        cases += [Case(stage, dep, output, point, "dvc") for point in ("written", "replaced")]
        hand = ("written", "replaced") if output in FILE_OUTPUTS else ("written", "between", "replaced")
        cases += [Case(stage, dep, output, point, "hand") for point in hand]
    return cases


def command(stage: str) -> list[str]:
    name, _, item = stage.partition("@")
    return ["python", "-m", "ubp", name, *([item] if item else [])]


def make_repo(root: Path) -> None:
    def edit(params):
        params["models"] = {k: v for k, v in params["models"].items() if k in PROFILES}
        # dvc.yaml's marker stages iterate over ensemble.sources and combined.stacked.sources: keep both
        params["ensemble"] = {**params["ensemble"], "sources": ["aggregated"], "per_source": {}}
        params["combined"]["stacked"]["sources"] = ["aggregated"]
    tiny_repo(root, edit)
    dvc(root, "repro", *TARGETS)


def run(root: Path, cmd: list[str], fault: str | None = None, check: bool = True, **extra) -> subprocess.CompletedProcess:
    """`cmd` in its own session (a fault kills its process group, never the caller)."""
    env = {**os.environ, **GIT_ENV, **extra}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, start_new_session=True)
    if check and fault is None and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def dvc(root: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    return run(root, ["dvc", *args], fault)


def snapshot(root: Path) -> dict[str, str]:
    """md5 of every output file (metrics without their wall times)."""
    return {rel: hashlib.md5(data).hexdigest() for rel, data in graph_outputs(root).items()}


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for top in ("data", "embeddings", "metrics", "reports")
                  for p in (root / top).rglob(".*") if STALE.match(p.name))


def pending(root: Path) -> list[str]:
    """What `dvc status` would re-run, apart from metrics files whose only change is a wall time (a
    stage run by hand rewrites its metrics with a new `seconds`: DVC sees a modified file)."""
    status = json.loads(dvc(root, "status", "--json", *TARGETS).stdout or "{}")
    out = []
    for stage, changes in status.items():
        for change in changes:
            outs = change.get("changed outs", {}) if isinstance(change, dict) else {}
            if not (isinstance(change, dict) and set(change) == {"changed outs"} and all(
                    path.startswith("metrics/") and state == "modified" for path, state in outs.items())):
                out.append(f"{stage}: {change}")
    return out


def run_case(root: Path, case: Case, baseline: dict[str, str]) -> dict:
    """Kill, recover, compare; returns what happened (the caller asserts or tabulates it)."""
    fault = f"{case.point}:{case.output}"
    dep = root / case.dep
    original = dep.read_bytes()
    if case.runner == "dvc":
        # One comment per kill point: with the same comment as an earlier case DVC would take the stage's
        # outputs from its run cache instead of running it, and nothing would be killed.
        dep.write_bytes(original + f"\n# kill test: {case.point}\n".encode())
        killed = dvc(root, "repro", *TARGETS, fault=fault)
        left = leftovers(root)
        recovered = run(root, ["dvc", "repro", *TARGETS], check=False)
    else:
        extra = {"UBP_NO_EXCHANGE": "1"} if case.point == "between" else {}
        killed = run(root, command(case.stage), fault=fault, **extra)
        left = leftovers(root)
        recovered = run(root, command(case.stage), check=False)
    stale = pending(root) if recovered.returncode == 0 else ["not recovered"]
    after, clean = snapshot(root), leftovers(root)
    if case.runner == "dvc":
        dep.write_bytes(original)
        dvc(root, "repro", *TARGETS)  # back to the baseline's code (the stage re-runs to the same bytes)
    return {"stage": case.stage, "point": case.point, "runner": case.runner, "killed": killed.returncode == -9,
            "left": left, "recovered": recovered.returncode == 0, "up_to_date": not stale, "pending": stale,
            "same": after == baseline,
            "differs": sorted(k for k in set(after) | set(baseline) if after.get(k) != baseline.get(k)),
            "leftovers": clean, "error": recovered.stderr[-2000:] if recovered.returncode else ""}
