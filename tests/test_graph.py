"""The DVC graph as DVC itself reads dvc.yaml and params.yaml: each stage depends on what it reads."""
from __future__ import annotations

import shutil
from pathlib import Path

import networkx as nx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMMON = {"data/split", "data/canonical/input", "data/canonical/product_properties.parquet"}


def read_graph(root: Path) -> dict:
    """Per stage: its deps (paths), its params (keys), and every stage it depends on, directly or not."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
        return {s.name: {"deps": {str(d.def_path) for d in s.deps if not isinstance(d, ParamsDependency)},
                               "params": {p for d in s.deps if isinstance(d, ParamsDependency) for p in d.params},
                               "upstream": {t.name for t in nx.descendants(graph, s)}}
                for s in repo.index.stages}


@pytest.fixture(scope="module")
def stages() -> dict:
    return read_graph(REPO)


def overridden(tmp_path: Path, *overrides: str) -> dict:
    """The graph after `dvc exp run -S <override> ...` changed params.yaml (DVC's own override code),
    read from a copy of dvc.yaml and params.yaml."""
    from dvc.repo import Repo
    from dvc.utils.hydra import apply_overrides

    Repo.init(str(tmp_path), no_scm=True).close()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    apply_overrides(str(tmp_path / "params.yaml"), list(overrides))
    return read_graph(tmp_path)


def embeds(stage: dict) -> set[str]:
    """The base profiles a stage depends on, through any path of the graph."""
    return {s.split("@", 1)[1] for s in stage["upstream"] if s.startswith("embed@")}


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


def test_each_combine_stage_depends_on_exactly_its_sources_and_settings(stages):
    """combine@<p> re-runs for its own sources' embeddings (through their markers), its own entry and
    the section it inherits: no other profile's embedding, no data stage a source does not need."""
    from ubp.params import model_config

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["combined"]
    for name, entry in params["combined"].items():
        stage, sources = stages[f"combine@{name}"], set(model_config(params, name).sources)
        assert embeds(stage) == sources, name
        assert stage["params"] == {f"combined.{name}", entry["inherits"]}, name
        assert data_deps(stage) == COMMON, name
        assert {d for d in stage["deps"] if d.startswith("combined/")} == {f"combined/.sources/{name}"}
        reads = {params["models"][s]["reads"] for s in sources}  # the data stages it may follow, through them
        for data in ("features", "sequences", "targets"):
            assert (data in stage["upstream"]) == (data in reads), (name, data)


def test_sources_are_read_through_one_marker_stage_each(stages):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    listed = {"ensemble": params["ensemble"]["sources"], "stacked": params["combined"]["stacked"]["sources"]}
    for name, sources in listed.items():
        markers = {s for s in stages if s.startswith(f"{name}_sources@")}
        assert markers == {f"{name}_sources@{s}" for s in sources}
        for source in sources:
            assert f"embeddings/{source}" in stages[f"{name}_sources@{source}"]["deps"]
            assert embeds(stages[f"{name}_sources@{source}"]) == {source}


def test_set_ensemble_sources_changes_what_the_ensemble_depends_on(tmp_path):
    """`-S ensemble.sources=[features,dcn]` as users type it: the ensemble now follows dcn and not affinity."""
    graph = overridden(tmp_path, "ensemble.sources=[features,dcn]")
    assert embeds(graph["combine@ensemble"]) == {"features", "dcn"}
    assert "sequences" not in graph["combine@ensemble"]["upstream"]
    assert embeds(graph["combine@stacked"]) == {"features", "svd", "aggregated"}
