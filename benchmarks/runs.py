"""What the benchmarks share: the commit a run is made at, its scratch directory, params overrides."""
from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def head_commit(cwd: Path = REPO) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True,
                          text=True).stdout.strip()


def scratch_and_commit(description: str, prefix: str) -> tuple[Path, str]:
    """Parse `--workdir DIR` (default: a new temporary directory named `prefix`...); the commit of HEAD."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", type=Path, help="where the runs are made (default: a new temporary directory)")
    args = parser.parse_args()
    return args.workdir or Path(tempfile.mkdtemp(prefix=prefix)), head_commit()


def set_dotted(params: dict, dotted: str, value) -> None:
    """params['a']['b']['c'] = value for 'a.b.c', making the missing sections (a `dvc exp run -S`)."""
    *parents, key = dotted.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[key] = value
