"""The DVC graph as DVC itself reads dvc.yaml and params.yaml: each stage depends on what it reads."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMMON = {"data/split", "data/canonical/input", "data/canonical/product_properties.parquet"}


@pytest.fixture(scope="module")
def stages() -> dict:
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {s.addressing: {"deps": {str(d.def_path) for d in s.deps}} for s in repo.index.stages}


def data_deps(stage: dict) -> set[str]:
    return {d for d in stage["deps"] if d.startswith("data/")}


def test_each_embed_stage_depends_on_the_data_its_profile_reads(stages):
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    for name, entry in models.items():
        assert data_deps(stages[f"embed@{name}"]) == COMMON | {f"data/{entry['reads']}"}, name


def test_sequence_profiles_do_not_depend_on_the_features_table(stages):
    """`-S features.windows=[7,14]` changes data/features: no sequence profile may re-run."""
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    sequence = [n for n, e in models.items() if e["reads"] == "sequences"]
    assert sequence and all("data/features" not in stages[f"embed@{n}"]["deps"] for n in sequence)
    assert all("data/sequences" not in stages[f"embed@{n}"]["deps"]
               for n, e in models.items() if e["reads"] != "sequences")


def test_reads_is_what_the_method_declares():
    """params.yaml's `reads:` of every base profile agrees with its method's READS trait, and a wrong
    one stops the stage before any work, naming the value to set."""
    from ubp.io import UbpError
    from ubp.params import model_config, stage_reads

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert {n: e["reads"] for n, e in params["models"].items()} == {
        n: stage_reads(e["method"]) for n, e in params["models"].items()}
    assert stage_reads("gru_ae") == "sequences" and stage_reads("aggregated") == "split"
    params["models"]["dcn"]["reads"] = "sequences"
    with pytest.raises(UbpError, match="models.dcn.reads is 'sequences'.*set `reads: features`"):
        model_config(params, "dcn")
