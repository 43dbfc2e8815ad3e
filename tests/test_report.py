"""Leaderboard: Borda count by hand, the Markdown table and the chart."""
import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from ubp import schema
from ubp.report import borda, copy_curves, headroom, markdown, run

REPO = Path(__file__).resolve().parents[1]


def scores_of(values):
    return dict(zip(schema.TASKS, values))


def test_borda_by_hand():
    scores = {
        "a": scores_of([0.9, 0.9, 0.9, 0.9, 0.9, 0.5]),
        "b": scores_of([0.8, 0.8, 0.8, 0.8, 0.8, 0.9]),
        "c": scores_of([0.7, 0.7, 0.7, 0.7, 0.7, 0.9]),
    }
    # a: 2 points on five tasks, last on price (0) -> 10. b: 1 x5 + tie-first on price (2) -> 7. c: 0 x5 + 2 -> 2.
    assert borda(scores) == {"a": 10, "b": 7, "c": 2}


def test_report_writes_table_chart_and_json(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    for name, value in [("random", 0.5), ("oracle", 0.8)]:
        tasks = {t: {"score": value} for t in schema.TASKS}
        (metrics / f"{name}.json").write_text(json.dumps({"profile": name, "tasks": tasks}))
    tasks = {t: {"score": 0.9} for t in schema.TASKS}
    (metrics / "lightgbm.json").write_text(json.dumps({"profile": "lightgbm", "kind": "reference", "tasks": tasks}))
    (metrics / "skipme.json").write_text(json.dumps({"profile": "skipme", "skipped": "no oracle here"}))
    params = {"models": {"random": {}, "oracle": {}, "skipme": {}}, "eval": {"profile": "default"}}
    curve_dir = tmp_path / "embeddings" / "oracle"
    curve_dir.mkdir(parents=True)
    (curve_dir / "training_curve.csv").write_text("epoch,train_loss,val_loss\n1,0.5,0.6\n")
    run(params, metrics, tmp_path / "reports", root=tmp_path)
    table = (tmp_path / "reports" / "leaderboard.md").read_text()
    assert "| oracle | **0.8000** |" in table and "| 4.8000 | 6 |" in table
    assert table.index("| oracle") < table.index("| random")
    assert "Skipped `skipme`: no oracle here" in table
    assert "(reference, not a profile)* | 0.9000 |" in table and "| 5.4000 | — |" in table
    assert (tmp_path / "reports" / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((tmp_path / "reports" / "leaderboard.json").read_text())
    assert {r["profile"]: r["borda"] for r in rows} == {"random": 0, "oracle": 6, "lightgbm": None}
    curves = tmp_path / "reports" / "curves"
    assert sorted(p.name for p in curves.iterdir()) == ["oracle.csv"]  # only profiles with a curve
    assert (curves / "oracle.csv").read_text() == "epoch,train_loss,val_loss\n1,0.5,0.6\n"


def test_headroom_by_hand():
    scores = {
        "random": scores_of([0.5, 0.5, 0.5, 0.6, 0.6, 0.5]),
        "oracle": scores_of([0.9, 0.7, 0.8, 0.6, 0.7, 0.9]),
        "mine": scores_of([0.7, 0.8, 0.5, 0.7, 0.65, 0.6]),
    }
    share = headroom(scores, {"ref": scores_of([0.9] * 6)})
    mine = [share["mine"][t] for t in schema.TASKS]
    # (0.7-0.5)/0.4, (0.8-0.5)/0.2, 0/0.3, tie of floor and ceiling, (0.65-0.6)/0.1, (0.6-0.5)/0.4
    assert mine[:3] == pytest.approx([0.5, 1.5, 0.0]) and math.isnan(mine[3])
    assert mine[4:] == pytest.approx([0.5, 0.25])
    assert share["oracle"][schema.CHURN] == 1.0 and share["random"][schema.CHURN] == 0.0
    assert share["ref"][schema.CHURN] == pytest.approx(1.0)
    assert headroom({"mine": scores["mine"], "oracle": scores["oracle"]}) == {}  # no floor: no table
    table = markdown(scores, {}, "default", {"lightgbm": scores_of([0.9] * 6)})
    assert "## Share of the oracle's headroom" in table and "| *lightgbm (reference)* |" in table
    assert "| mine | 0.50 | 1.50 | 0.00 | nan | 0.50 | 0.25 | 0.55 |" in table
    assert "(downstream network `default`)" in table
    sampled = markdown(scores, {}, "compact", None, 200000)
    assert "(downstream network `compact`, on a seeded sample of 200,000 clients)" in sampled


def test_no_curve_leaves_a_placeholder(tmp_path):
    copy_curves({"random": tmp_path / "nothing"}, tmp_path / "curves")
    assert [p.name for p in (tmp_path / "curves").iterdir()] == [".keep"]


def test_dvc_plots_show_reads_only_curves(tmp_path):
    """The repository's own `plots:` declaration over a report directory: `dvc plots show` (as the
    README runs it) loads every plot without errors."""
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {}, "plots": plots}))
    src = tmp_path / "embeddings" / "dcn"
    src.mkdir(parents=True)
    (src / "training_curve.csv").write_text("epoch,train_loss,val_loss\n1,0.5,0.6\n2,0.4,0.5\n")
    copy_curves({"dcn": src, "random": tmp_path / "embeddings" / "random"}, tmp_path / "reports" / "curves")
    (tmp_path / "reports" / "leaderboard.json").write_text(json.dumps([{"profile": "dcn", "sum": 4.0}]))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, env=env)
    out = subprocess.run(["dvc", "plots", "show", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert "errors" not in shown and "failed" not in out.stderr
    assert set(shown["data"]) == {"reports/leaderboard.json", "reports/curves/dcn.csv"}
    values = shown["data"]["reports/curves/dcn.csv"][0]["content"]["data"]["values"]
    assert [(v["epoch"], v["val_loss"]) for v in values] == [("1", "0.6"), ("2", "0.5")]
