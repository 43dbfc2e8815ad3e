"""The whole DVC graph end to end on a tiny generated dataset, in a throw-away copy of the repo."""
import json
import os
import shutil
import subprocess

import pytest
import yaml

from ubp import schema
from ubp.data.synthetic import TINY
from ubp.params import profile_names
from tests.conftest import REPO

ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com",
       "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.com"}


def sh(cwd, *cmd):
    done = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A git + DVC copy of the tracked repository with tiny data and short neural training."""
    root = tmp_path_factory.mktemp("repo")
    tracked = sh(REPO, "git", "ls-files", "--cached", "--others", "--exclude-standard").split("\n")
    for rel in filter(None, tracked):
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
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "tiny")
    sh(root, "dvc", "repro")
    return root, params


def test_repro_scores_every_profile(workspace):
    root, params = workspace
    for name in profile_names(params):
        metrics = json.loads((root / "metrics" / f"{name}.json").read_text())
        assert set(metrics["tasks"]) == set(schema.TASKS), name
        assert all(0.0 <= t["score"] <= 1.0 for t in metrics["tasks"].values()), name
        assert metrics["sum"] == pytest.approx(sum(t["score"] for t in metrics["tasks"].values()), abs=1e-3)
    board = (root / "reports" / "leaderboard.md").read_text()
    assert all(f"| {name} |" in board for name in profile_names(params))
    assert (root / "reports" / "leaderboard.png").stat().st_size > 1000


def test_metrics_are_visible_to_dvc_and_graph_is_up_to_date(workspace):
    root, params = workspace
    shown = sh(root, "dvc", "metrics", "show", "--json")
    assert all(f"metrics/{name}.json" in shown for name in profile_names(params))
    assert "changed" not in sh(root, "dvc", "status")


def test_entry_written_from_all_events_passes_the_validator(workspace):
    root, _ = workspace
    sh(root, "python", "-m", "ubp", "submit", "aggregated", "--out", "entry")
    assert "valid entry" in sh(root, "python", "-m", "ubp", "validate", "entry")


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


def test_exp_run_hidden_retrains_the_neural_profiles_and_nothing_upstream(workspace):
    """`dvc exp run -S model.hidden=...` as users type it; runs last: it changes the workspace."""
    import re

    root, params = workspace
    out = sh(root, "dvc", "exp", "run", "-S", "model.hidden=24")
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    neural = {name for name, entry in params["models"].items() if entry["inherits"] == "model"}
    assert neural and {f"embed@{name}" for name in neural} <= ran
    assert {f"combine@{name}" for name in params.get("combined") or {}} <= ran  # built from the neural ones
    untouched = {"generate", "ingest", "split", "targets", "features", "sequences", "reference"}
    untouched |= {f"{stage}@{name}" for name, entry in params["models"].items() if entry["inherits"] != "model"
                  for stage in ("embed", "evaluate")}
    assert not ran & untouched, sorted(ran & untouched)
    diff = sh(root, "dvc", "metrics", "diff", "--json")
    changed = json.loads(diff)
    assert any(f"metrics/{name}.json" in changed for name in neural)
