"""The whole DVC graph end to end on a tiny generated dataset, in a throw-away copy of the repo."""
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ubp import schema
from ubp.data.synthetic import TINY
from ubp.params import model_config, profile_dir, profile_names
from tests.conftest import GIT_ENV, graph_outputs, tiny_repo

ENV = {**os.environ, **GIT_ENV}


def sh(cwd, *cmd):
    done = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A git + DVC copy of the tracked repository with tiny data and short neural training."""
    root = tmp_path_factory.mktemp("repo")
    params = tiny_repo(root)
    sh(root, "dvc", "repro")
    return root, params


def relevant_clients(root):
    return np.load(root / schema.CANONICAL_DIR / schema.RELEVANT_CLIENTS_FILE)


def rescore(root, params, name) -> dict[str, float]:
    """The profile's six task scores by another route than the stage's: its stored embedding aligned to
    each task's labels in memory and trained in this process (no float32 file, no workers, no metrics
    file), with the eval section of params.yaml."""
    from ubp.evaluate.protocol import ProtocolConfig, align, evaluate_task

    config = ProtocolConfig.from_params(params["eval"])
    where = root / profile_dir(params, name)
    ids, emb = np.load(where / "client_ids.npy"), np.load(where / "embeddings.npy")
    scores = {}
    for task in schema.TASKS:
        with np.load(root / schema.TARGETS_DIR / schema.LABELS_SUBDIR / f"{task}.npz") as npz:
            labels = dict(npz)
        _, x, y_train, y_val = align(labels["client_ids"], labels["y_train"], labels["y_validation"], ids, emb)
        scores[task] = evaluate_task(task, x, y_train, y_val, labels.get("popularity"), config)["score"]
    return scores


def board_rows(root) -> dict[str, list[str]]:
    """The rows of reports/leaderboard.md's first table (the scores) by name: the cells after the
    name, bold removed."""
    rows, started = {}, False
    for line in (root / "reports" / "leaderboard.md").read_text().splitlines():
        if not line.startswith("|"):
            if started:
                break
            continue
        started = True
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if cells[0] not in ("profile", "---"):
            rows[cells[0]] = cells[1:]
    return rows


def test_repro_writes_every_profile_for_the_relevant_clients(workspace):
    """Every profile's client_ids.npy is relevant_clients.npy itself (int64, same ids, same order), its
    embeddings one float16 row per id, and every profile has six task scores."""
    root, params = workspace
    relevant = relevant_clients(root)
    assert relevant.dtype == np.int64 and len(np.unique(relevant)) == len(relevant) == TINY["n_relevant"]
    for name in profile_names(params):
        where = root / profile_dir(params, name)
        ids, emb = np.load(where / "client_ids.npy"), np.load(where / "embeddings.npy")
        assert ids.dtype == np.int64 and np.array_equal(ids, relevant), name
        assert emb.dtype == np.float16 and emb.shape[0] == len(ids), name
        metrics = json.loads((root / "metrics" / f"{name}.json").read_text())
        assert list(metrics["tasks"]) == list(schema.TASKS), name
    assert set(profile_names(params)) <= set(board_rows(root))
    assert (root / "reports" / "leaderboard.png").stat().st_size > 1000


@pytest.mark.parametrize("name", ["aggregated", "ensemble"])  # a base profile and a combined one
def test_metrics_and_leaderboard_hold_the_profiles_own_scores(workspace, name):
    """The metrics file's task scores and sum, and the leaderboard row, against the profile scored again
    here; the sum is added up here from those independent scores."""
    root, params = workspace
    want = rescore(root, params, name)
    metrics = json.loads((root / "metrics" / f"{name}.json").read_text())
    for task, score in want.items():  # equal unless a value sits on a rounding boundary
        assert metrics["tasks"][task]["score"] == pytest.approx(score, abs=1.5e-4), (name, task)
    assert metrics["sum"] == pytest.approx(sum(want.values()), abs=6e-4)
    row = [float(cell) for cell in board_rows(root)[name][:7]]  # six tasks in the evaluator's order, then the sum
    assert row == pytest.approx([*want.values(), sum(want.values())], abs=6e-4)


def test_metrics_are_visible_to_dvc_and_graph_is_up_to_date(workspace):
    root, params = workspace
    shown = sh(root, "dvc", "metrics", "show", "--json")
    assert all(f"metrics/{name}.json" in shown for name in profile_names(params))
    assert "changed" not in sh(root, "dvc", "status")


def test_bytecode_beside_the_code_changes_no_stage(workspace):
    """Python writes __pycache__/ into src/ubp/<package>/ on import (unless PYTHONDONTWRITEBYTECODE):
    a stage whose code dependency is a directory (features, combine, evaluate) must not look changed."""
    root, _ = workspace
    packages = [root / "src" / "ubp" / name for name in ("features", "combine", "evaluate")]
    sh(root, sys.executable, "-m", "compileall", "-q", *map(str, packages))
    assert all(any((package / "__pycache__").glob("*.pyc")) for package in packages)
    try:
        assert "changed" not in sh(root, "dvc", "status")
    finally:
        for package in packages:
            shutil.rmtree(package / "__pycache__")


def last_event(root) -> datetime:
    stamps = [pd.read_parquet(root / schema.CANONICAL_DIR / f"{event}.parquet", columns=[schema.TIMESTAMP])
              [schema.TIMESTAMP].max() for event in schema.EVENT_TYPES]
    return max(stamps).to_pydatetime()


@pytest.mark.parametrize("name", ["aggregated", "ensemble", "stacked"])
def test_entry_written_from_all_events_passes_the_validator(workspace, name):
    """SPEC §7: the entry holds exactly the relevant clients (int64, here in relevant_clients.npy's
    order), one float16 row each, and is made from all events: as of one second after the last event,
    so not the stage's input-only embedding."""
    root, params = workspace
    assert name in profile_names(params)
    sh(root, "python", "-m", "ubp", "submit", name, "--out", f"entry_{name}")
    assert "valid entry" in sh(root, "python", "-m", "ubp", "validate", f"entry_{name}")
    entry = root / f"entry_{name}"
    ids, emb = np.load(entry / "client_ids.npy"), np.load(entry / "embeddings.npy")
    assert ids.dtype == np.int64 and np.array_equal(ids, relevant_clients(root))
    assert emb.dtype == np.float16 and emb.shape[0] == len(ids) and 1 <= emb.shape[1] <= 2048
    meta = json.loads((entry / "meta.json").read_text())
    cutoff = (last_event(root) + timedelta(seconds=1)).strftime(schema.TIMESTAMP_FORMAT)
    assert (meta.get("events"), meta.get("cutoff")) == ("all", cutoff)
    local = np.load(root / profile_dir(params, name) / "embeddings.npy")
    assert local.shape == emb.shape and not np.array_equal(local, emb)  # the target windows' events count


def test_notebook_runs_headless_on_the_tiny_run(workspace):
    import nbclient
    import nbformat

    root, params = workspace
    nb = nbformat.read(root / "notebooks" / "profiles_tour.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    board = nb.cells[1].outputs[0]["data"]["text/plain"]  # the leaderboard DataFrame
    assert all(name in board for name in profile_names(params))
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 3  # scores per task, the 2-D maps, the training curves


def test_two_fresh_runs_agree_to_the_byte(workspace, tmp_path):
    """#16 part 6: the same params and seed give the same bytes — every stage's data, every profile's
    embedding and meta.json, every score, the leaderboard — in another fresh clone, another process."""
    root, _ = workspace
    again = tmp_path / "again"
    again.mkdir()
    tiny_repo(again)
    sh(again, "dvc", "repro")
    first, second = graph_outputs(root), graph_outputs(again)
    assert sorted(first) == sorted(second)
    assert any(rel.startswith("embeddings/") and rel.endswith("embeddings.npy") for rel in first)
    differ = [rel for rel in first if first[rel] != second[rel]]
    assert not differ, f"differ between two runs: {differ}"


def test_exp_run_hidden_retrains_the_neural_profiles_and_nothing_upstream(workspace):
    """`dvc exp run -S model.hidden=...` as users type it; runs last: it changes the workspace."""
    import re

    root, params = workspace
    out = sh(root, "dvc", "exp", "run", "-S", "model.hidden=24")
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    neural = {name for name, entry in params["models"].items() if entry["inherits"] == "model"}
    assert neural and {f"embed@{name}" for name in neural} <= ran
    combined = params.get("combined") or {}
    # a combined profile re-runs if it is a network itself or one of its sources is, and only then
    follows = {name for name, entry in combined.items()
               if entry["inherits"] == "model" or set(model_config(params, name).sources) & neural}
    assert follows and {f"combine@{name}" for name in follows} <= ran
    untouched = {"generate", "ingest", "split", "targets", "features", "sequences", "reference"}
    untouched |= {f"{stage}@{name}" for name, entry in params["models"].items() if entry["inherits"] != "model"
                  for stage in ("embed", "evaluate")}
    untouched |= {f"{stage}@{name}" for name in set(combined) - follows for stage in ("combine", "evaluate_combined")}
    assert not ran & untouched, sorted(ran & untouched)
    diff = sh(root, "dvc", "metrics", "diff", "--json")
    changed = json.loads(diff)
    assert any(f"metrics/{name}.json" in changed for name in neural)
