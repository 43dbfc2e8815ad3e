"""Every stage x kill point x runner of tests/kill_harness.py on the tiny graph -> reports/bench/kill_matrix.md.

    python benchmarks/kill_matrix.py [--workdir DIR]

Not a speed benchmark: the full matrix of #16 part 1 (tests/test_kill.py runs a few of its cases in CI).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runs import scratch_and_commit  # noqa: E402  (benchmarks/ is this script's directory)
from tests import kill_harness as K  # noqa: E402
from ubp import schema  # noqa: E402
from ubp.io import save_json, save_text  # noqa: E402

OUT = schema.BENCH_DIR / "kill_matrix"


def markdown(rows: list[dict], commit: str) -> str:
    lines = ["# Killed mid-stage: every stage x kill point", "",
             f"Made by `python benchmarks/kill_matrix.py` at commit {commit} on the TINY graph "
             f"(`{' '.join(K.TARGETS)}`, profiles {', '.join(sorted(K.PROFILES))}); see tests/kill_harness.py for the "
             "scenarios. `left`: what the killed write left; `recovered`: the next run completed; `same`: every output "
             "byte-equal to an uninterrupted run's; `clean`: none of the temporaries left after it; "
             "`dvc status`: nothing to re-run.", "",
             "| stage | runner | kill point | killed | left by the kill | recovered | same bytes | clean | dvc status clean |",
             "|---|---|---|---|---|---|---|---|---|"]
    yes = lambda v: "yes" if v else "**no**"
    for r in rows:
        lines.append(f"| {r['stage']} | {r['runner']} | {r['point']} | {yes(r['killed'])} | {', '.join(r['left']) or '-'} "
                     f"| {yes(r['recovered'])} | {yes(r['same'])} | {yes(not r['leftovers'])} | {yes(r['up_to_date'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    root, commit = scratch_and_commit(__doc__.splitlines()[0], "ubp-kill-")
    K.make_repo(root)
    baseline = K.snapshot(root)
    rows = []
    for case in K.all_cases():
        started = time.perf_counter()
        rows.append(K.run_case(root, case, baseline))
        print(f"{case.stage:22s} {case.runner:4s} {case.point:8s} recovered={rows[-1]['recovered']} "
              f"same={rows[-1]['same']} clean={not rows[-1]['leftovers']} ({time.perf_counter() - started:.0f} s)", flush=True)
    save_json(OUT.with_suffix(".json"), {"commit": commit, "rows": rows})
    save_text(OUT.with_suffix(".md"), markdown(rows, commit))


if __name__ == "__main__":
    main()
