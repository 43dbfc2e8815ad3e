"""Shared fixtures: one tiny generated dataset taken through ingest, split and targets per session,
and the official conformance suite (../shared/conformance, or $UBP_CONFORMANCE)."""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import ubp  # noqa: F401  first: pins the CPU kernels (ubp.portable) before numpy loads

import numpy as np
import pytest
import yaml

from ubp import schema
from ubp.io import UbpError
from ubp.models.base import EmbedContext

REPO = Path(__file__).resolve().parents[1]
# Beside the repository as README says; UBP_CONFORMANCE points elsewhere (e.g. from a git worktree).
CONFORMANCE = Path(os.environ.get("UBP_CONFORMANCE") or REPO.parent / "shared" / "conformance")


GIT_ENV = {"DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.com"}


def tiny_repo(root: Path, edit=None) -> dict:
    """A git + DVC copy of the tracked repository in `root` (no data, metrics, reports or dvc.lock),
    its params set for the TINY dataset and 2 training epochs, then `edit(params)` if given; returns
    the params written. Nothing is run."""
    import shutil
    import subprocess

    import yaml

    from ubp.data.synthetic import TINY

    def git(*args):
        subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT_ENV}, check=True, capture_output=True)

    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout.split("\n")
    for rel in filter(None, listed):
        if rel.startswith(("metrics/", "reports/")) or rel == "dvc.lock" or not (REPO / rel).is_file():
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["synthetic"] = {**params["data"]["synthetic"], **TINY}
    params["model"]["epochs"] = 2
    for entry in [*params["models"].values(), *(params.get("combined") or {}).values()]:
        if entry.get("inherits") == "model":
            entry["epochs"] = 2  # some neural profiles set their own epochs for the default data
    if edit is not None:
        edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "tiny")
    return params


def graph_outputs(root: Path) -> dict[str, bytes]:
    """Every file the graph wrote under `root`, metrics without their wall times (the only run-to-run
    difference a run may have: `seconds` of an evaluation, metrics/embed/<p>.json of an embedding)."""
    import json

    files = {}
    for top in ("data", "embeddings", "combined", "metrics", "reports"):
        for path in sorted((root / top).rglob("*")):
            rel = str(path.relative_to(root))
            if not path.is_file() or rel.startswith("metrics/embed/"):
                continue
            if rel.startswith("metrics/"):
                data = json.loads(path.read_text())
                data.pop("seconds", None)
                for task in data.get("tasks", {}).values():
                    task.pop("seconds", None)
                files[rel] = json.dumps(data, sort_keys=True).encode()
            else:
                files[rel] = path.read_bytes()
    return files


def in_ci() -> bool:
    """CI services set CI (GitHub Actions: CI=true; .ci/run is called as `CI=true bash .ci/run`)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def refuses_before_any_work(main, argv: list[str], params: dict, match: str, cwd: Path, monkeypatch) -> None:
    """A stage's `main(argv)` run in `cwd` with this params.yaml stops with a UbpError matching `match`
    and leaves `cwd` as it was: it checks its settings before it reads or writes anything (with an
    input missing, a stage that read first would fail on that input instead)."""
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    before = sorted(cwd.rglob("*"))
    monkeypatch.chdir(cwd)
    with pytest.raises(UbpError, match=match):
        main(argv)
    assert sorted(cwd.rglob("*")) == before


@pytest.fixture(scope="session")
def conformance() -> Path:
    """The suite's root (raw/ and expected/). Missing: a failure in CI, where a skip would hide that
    the official outputs were never compared; a skip with the reason elsewhere."""
    missing = [part for part in ("raw", "expected") if not (CONFORMANCE / part).is_dir()]
    if missing:
        message = (f"conformance suite not found: no {' or '.join(p + '/' for p in missing)} in {CONFORMANCE} "
                   "(clone the repository beside shared/, or set UBP_CONFORMANCE to the suite's directory)")
        if in_ci():
            pytest.fail(f"{message}; CI must run the conformance tests", pytrace=False)
        pytest.skip(message)
    return CONFORMANCE


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """generate(TINY) -> ingest -> split -> targets, in a session temp dir."""
    from ubp.data.ingest import ingest
    from ubp.data.split import split
    from ubp.data.synthetic import TINY, generate, synthetic_config
    from ubp.data.targets import build_targets

    root = tmp_path_factory.mktemp("tiny")
    dirs = {name: root / name for name in ("synthetic", "canonical", "split", "targets")}
    generate(dirs["synthetic"], synthetic_config(TINY))
    ingest(dirs["synthetic"], dirs["canonical"])
    split(dirs["canonical"], dirs["split"])
    build_targets(dirs["canonical"], dirs["split"], dirs["targets"])
    return dirs


@pytest.fixture(scope="session")
def tiny_context(tiny_dirs) -> EmbedContext:
    import json

    split_info = json.loads((tiny_dirs["split"] / schema.SPLIT_FILE).read_text())
    return EmbedContext(
        client_ids=np.load(tiny_dirs["canonical"] / schema.RELEVANT_CLIENTS_FILE),
        events_dir=tiny_dirs["split"] / "input",
        properties_path=tiny_dirs["canonical"] / f"{schema.PROPERTIES}.parquet",
        cutoff=datetime.strptime(split_info["train_target_start"], schema.TIMESTAMP_FORMAT),
        synthetic_dir=tiny_dirs["synthetic"],
        targets_dir=tiny_dirs["targets"],
    )
