"""A profile's settings: its shared section overridden by its own entry, typed by its method's Config."""
import dataclasses
import json

import pytest

from ubp.io import UbpError
from ubp.combine import ensemble
from ubp.models import gru_ae, svd
from ubp.params import (load_params, model_config, profile_dir, profile_method, profile_names, profile_reads,
                        section_config)
from tests.conftest import REPO

PARAMS = {
    "model": {"hidden": 256, "seed": 0},
    "embedding": {"seed": 0},
    "models": {
        "gru": {"method": "gru_ae", "inherits": "model", "hidden": 128},
        "svd": {"method": "svd", "inherits": "embedding", "dims": {"sku": 32}},
        "features": {"method": "features", "inherits": "embedding"},
        "nomethod": {"inherits": "model"},
        "badsection": {"method": "x", "inherits": "model.hidden"},
    },
    "combined": {"ens": {"method": "ensemble", "inherits": "embedding", "sources": ["svd", "features"]}},
}


def with_entry(section: str, key: str, value, profile: str | None = None) -> dict:
    params = {**PARAMS, "model": dict(PARAMS["model"]), "models": {k: dict(v) for k, v in PARAMS["models"].items()}}
    (params["models"][profile] if profile else params[section])[key] = value
    return params


def test_own_entry_overrides_inherited_settings_and_the_rest_are_the_method_s_defaults():
    gru = model_config(PARAMS, "gru")
    assert type(gru) is gru_ae.Config and (gru.hidden, gru.seed, gru.layers) == (128, 0, gru_ae.Config().layers)
    cfg = model_config(PARAMS, "svd")
    assert type(cfg) is svd.Config and cfg.dims == svd.Dims(sku=32) and cfg.dims.url == svd.Dims().url
    assert model_config(with_entry("model", "hidden", 64), "gru").hidden == 128  # the profile's own wins
    assert model_config({**PARAMS, "models": {"gru": {"method": "gru_ae", "inherits": "model"}}}, "gru").hidden == 256


def test_settings_are_frozen_and_independent_of_params():
    cfg = model_config(PARAMS, "ens")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 5
    assert cfg.sources == ("svd", "features") and PARAMS["combined"]["ens"]["sources"] == ["svd", "features"]


@pytest.mark.parametrize("params, name, message", [
    (with_entry("model", "hiden", 512), "gru", r"unknown key 'model\.hiden'; did you mean 'hidden'"),
    (with_entry("models", "dropuot", 0.2, "gru"), "gru", r"unknown key 'models\.gru\.dropuot'; did you mean 'dropout'"),
    (with_entry("model", "seed", "0"), "gru", r"model\.seed must be an integer, got '0'"),
    (with_entry("models", "hidden", 1.5, "gru"), "gru", r"models\.gru\.hidden must be an integer"),
    (with_entry("models", "fit_on", "everyone", "svd"), "svd", r"models\.svd\.fit_on must be one of 'all', 'relevant'"),
])
def test_a_typo_or_a_wrong_type_names_where_it_was_written(params, name, message):
    with pytest.raises(UbpError, match=message):
        model_config(params, name)


@pytest.mark.parametrize("name, message", [
    ("missing", "no profile 'missing' under models or combined"),
    ("nomethod", "models.nomethod needs 'method:'"),
    ("badsection", "names 'model.hidden', which is not a section"),
])
def test_bad_entries_are_named(name, message):
    with pytest.raises(UbpError, match=message):
        model_config(PARAMS, name)


def test_combined_profiles_are_profiles_with_their_own_directory():
    assert profile_names(PARAMS) == ["gru", "svd", "features", "nomethod", "badsection", "ens"]
    assert type(model_config(PARAMS, "ens")) is ensemble.Config and profile_method(PARAMS, "ens") == "ensemble"
    assert str(profile_dir(PARAMS, "svd")) == "embeddings/svd" and str(profile_dir(PARAMS, "ens")) == "combined/ens"


def test_what_a_profile_reads_includes_its_sources_inputs():
    assert profile_reads(PARAMS, "svd") == ("events", "properties")
    assert profile_reads(PARAMS, "gru") == ("sequences",)
    assert profile_reads(PARAMS, "ens") == ("embeddings", "events", "properties", "features")


# The params.yaml sections that are not profiles, each with the Config its stage builds.
def section_configs():
    from ubp.data.synthetic import DataConfig
    from ubp.data.targets import TargetsConfig
    from ubp.evaluate.protocol import EvalConfig
    from ubp.features.build import FeaturesConfig
    from ubp.reference import ReferenceConfig
    from ubp.sequences import SequencesConfig

    return {"data": DataConfig, "targets": TargetsConfig, "features": FeaturesConfig, "sequences": SequencesConfig,
            "reference": ReferenceConfig, "eval": EvalConfig}


@pytest.mark.parametrize("name", list(section_configs()))
def test_every_key_of_the_repository_params_is_a_field_of_its_section_config(name):
    """The repository's params.yaml builds (a key its Config lacks would be refused) and every value
    it sets is the one the stage sees: params.yaml and the Configs cannot drift apart."""
    from ubp.config import as_dict

    params = load_params(REPO / "params.yaml")
    cfg = section_configs()[name].from_params(params)
    built = json.loads(json.dumps(as_dict(cfg)))
    for key, value in params[name].items():
        if isinstance(value, dict) and isinstance(built[key], dict):  # data.synthetic sets a few keys of many
            value = {**built[key], **value}
        assert built[key] == value, (name, key)


def test_a_missing_section_gives_the_defaults_and_a_malformed_one_is_refused():
    from ubp.features.build import FeaturesConfig

    assert section_config({}, FeaturesConfig, "features") == FeaturesConfig()
    assert section_config({"features": None}, FeaturesConfig, "features") == FeaturesConfig()
    with pytest.raises(UbpError, match=r"params.yaml: features must be a mapping, got \[7, 14\]"):
        section_config({"features": [7, 14]}, FeaturesConfig, "features")
