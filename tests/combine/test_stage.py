"""`python -m ubp combine <profile>` and its markers, in a throw-away repository layout: the output of a
hand-checked case (the same bytes the old `python -m ubp embed ensemble` wrote), the markers, and
settings refused before any work."""
import hashlib
import json
import re

import numpy as np
import pytest
import yaml

from ubp import schema
from ubp.__main__ import main
from ubp.combine import ensemble as E
from ubp.combine import stage
from ubp.features.sources import FeaturesConfig
from ubp.io import UbpError
from ubp.params import model_config
from ubp.profile_store import write as write_profile_dir
from ubp.sequences import SequencesConfig

CUTOFF = "2022-09-01 00:00:00"
IDS = [7, 3, 5, 1]  # relevant_clients.npy: the rows' order
# a's rows (l2, not centred, balance none): [0 5] -> [0 1], [0 0], [6 8] -> [.6 .8], [3 4] -> [.6 .8].
# b (as published, weight 2): mean [2 20]; centred and doubled [-2 -20], [2 -20], [0 40]; client 5 absent -> 0.
EXPECTED = np.array([[0.0, 1.0, -2.0, -20.0], [0.0, 0.0, 2.0, -20.0], [0.6, 0.8, 0.0, 0.0], [0.6, 0.8, 0.0, 40.0]],
                    np.float16)
# md5 of the embeddings.npy `python -m ubp embed ens` wrote for this case before ubp.combine existed (commit d71de33)
OLD_MD5 = "94ebd2abdb6d2d071ebebb0f27c368e7"
PARAMS = {"embedding": {"seed": 0}, "model": {"seed": 0},
          "ensemble": {"sources": ["a", "b"], "balance": "none",
                       "per_source": {"a": {"norm": "l2", "center": False}, "b": {"norm": "none", "weight": 2.0}}},
          "models": {"base": {"method": "random", "inherits": "embedding", "reads": "split"}},
          "combined": {"ens": {"method": "ensemble", "inherits": "ensemble"}}}


def store(root, name, ids, x):
    meta = {"profile": name, "method": "external", "events": str(schema.SPLIT_DIR / "input"), "cutoff": CUTOFF}
    write_profile_dir(root / schema.EMBEDDINGS_DIR / name, np.asarray(ids, np.int64), meta, np.asarray(x, np.float16))


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository root with the relevant clients, the split's cutoff, two stored sources and params.yaml."""
    (tmp_path / schema.SPLIT_DIR).mkdir(parents=True)
    (tmp_path / schema.SPLIT_DIR / schema.SPLIT_FILE).write_text(json.dumps({"train_target_start": CUTOFF}))
    relevant = tmp_path / schema.CANONICAL_DIR / schema.RELEVANT_CLIENTS_FILE
    relevant.parent.mkdir(parents=True)
    np.save(relevant, np.array(IDS, np.int64))
    store(tmp_path, "a", [1, 3, 5, 7], [[3, 4], [0, 0], [6, 8], [0, 5]])
    store(tmp_path, "b", [7, 3, 1], [[1, 10], [3, 10], [2, 40]])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def set_params(root, **sections):
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump({**params, **sections}, sort_keys=False))


def test_combine_writes_the_hand_checked_ensemble_with_the_old_commands_bytes(repo):
    assert main(["combine", "ens"]) == 0
    out = repo / schema.COMBINED_DIR / "ens"
    assert np.array_equal(np.load(out / "client_ids.npy"), IDS)
    x = np.load(out / "embeddings.npy")
    assert x.dtype == np.float16 and np.array_equal(x, EXPECTED)
    assert hashlib.md5((out / "embeddings.npy").read_bytes()).hexdigest() == OLD_MD5
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == "ensemble" and meta["dim"] == 4 and meta["cutoff"] == CUTOFF and "seconds" not in meta
    assert json.loads((repo / schema.METRICS_DIR / "embed" / "ens.json").read_text())["profile"] == "ens"
    assert meta["sources"]["b"] == {"method": "external", "norm": "none", "weight": 2.0, "pca": None, "dim_in": 2,
                                    "dim": 2, "from": "stored", "imputed_clients": 1}
    assert meta["config"]["per_source"]["a"] == {"weight": 1.0, "pca": None, "norm": "l2", "center": False}


def test_the_context_carries_the_features_and_sequences_sections_as_their_typed_configs(repo, monkeypatch):
    """A stacked profile recomputes the features table through the context: its settings must be the
    typed sections (the merge once passed the raw dicts, which failed inside a feature family)."""
    set_params(repo, features={"windows": [7], "memory_limit": "1GB"}, sequences={"max_len": 8})
    seen = {}

    def write_embeddings(ctx, cfg, path):
        seen["ctx"] = ctx
        np.save(path, np.zeros((len(IDS), 4), np.float16))
        return len(IDS), 4

    monkeypatch.setattr(E, "write_embeddings", write_embeddings)
    assert main(["combine", "ens"]) == 0
    assert seen["ctx"].feature_settings == FeaturesConfig(windows=(7,), memory_limit="1GB")
    assert seen["ctx"].sequence_settings == SequencesConfig(max_len=8)


def test_a_marker_holds_each_file_s_md5_and_only_a_source_gets_one(repo):
    assert main(["combine", "ens", "--source", "b"]) == 0
    marker = json.loads((repo / stage.MARKERS_DIR / "ens" / "b").read_text())
    files = repo / schema.EMBEDDINGS_DIR / "b"
    assert marker == {"source": "b", "files": {p.name: hashlib.md5(p.read_bytes()).hexdigest()
                                               for p in sorted(files.iterdir())}}
    assert set(marker["files"]) == {"client_ids.npy", "embeddings.npy", "meta.json"}
    with pytest.raises(UbpError, match="'base' is not a source of combined profile 'ens'"):
        stage.mark("ens", "base", PARAMS)


def test_under_dvc_a_source_without_its_marker_stops_the_stage(repo):
    """Markers present (a DVC run) but one source has none: dvc.yaml does not make the stage depend on it."""
    stage.mark("ens", "a", PARAMS)
    with pytest.raises(UbpError, match="no marker of source.s. b of 'ens': dvc.yaml needs a stage"):
        stage.run("ens", PARAMS)
    stage.mark("ens", "b", PARAMS)
    stage.run("ens", PARAMS)


def test_each_command_refuses_the_other_section_s_profiles(repo, capsys):
    assert main(["embed", "ens"]) == 1 and "run `python -m ubp combine ens`" in capsys.readouterr().err
    assert main(["combine", "base"]) == 1 and "run `python -m ubp embed base`" in capsys.readouterr().err
    wrong = {**PARAMS, "models": {"ens2": {"method": "ensemble", "inherits": "ensemble"}}}
    with pytest.raises(UbpError, match="models.ens2 has method 'ensemble', which builds a profile from other "
                                       "profiles: put it under combined:"):
        model_config(wrong, "ens2")


ENSEMBLE = PARAMS["ensemble"]


@pytest.mark.parametrize("sections, message", [
    ({"ensemble": {**ENSEMBLE, "balanse": "none"}}, r"unknown key 'ensemble\.balanse'; did you mean 'balance'"),
    ({"ensemble": {**ENSEMBLE, "seed": "0"}}, r"ensemble\.seed must be an integer, got '0'"),
    ({"ensemble": {**ENSEMBLE, "per_source": {"a": {"norm": "L2"}}}}, r"ensemble\.per_source\.a\.norm must be"),
    ({"ensemble": {**ENSEMBLE, "per_source": {"c": {}}}}, r"per_source\.c is neither a source nor a profile"),
    ({"combined": {"ens": {"method": "ensemble", "inherits": "ensemble", "max_dims": 8}}},
     r"unknown key 'combined\.ens\.max_dims'; did you mean 'max_dim'"),
])
def test_a_typo_or_wrong_type_stops_the_stage_before_any_work(repo, monkeypatch, capsys, sections, message):
    """Refused before the context is read or a source is opened: both are made unreadable here."""
    set_params(repo, **sections)
    (repo / schema.SPLIT_DIR / schema.SPLIT_FILE).unlink()
    monkeypatch.setattr(E, "load_source", lambda *a: pytest.fail("a source was read"))
    assert main(["combine", "ens"]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (repo / schema.COMBINED_DIR / "ens").exists()


def test_stacked_settings_are_typed_too(repo):
    params = {**PARAMS, "combined": {"st": {"method": "stacked", "inherits": "model", "sources": ["base"]}}}
    assert model_config(params, "st").sources == ("base",)
    params["combined"]["st"]["shift_dys"] = 7
    with pytest.raises(UbpError, match=r"unknown key 'combined\.st\.shift_dys'; did you mean 'shift_days'"):
        model_config(params, "st")
    params["combined"]["st"] = {"method": "stacked", "inherits": "model", "sources": "base"}
    with pytest.raises(UbpError, match=r"combined\.st\.sources must be a list of strings, got 'base'"):
        model_config(params, "st")
