"""A profile inherits its shared section and overrides it with its own entry."""
import pytest

from ubp.io import UbpError
from ubp.params import model_config, profile_dir, profile_names

PARAMS = {
    "model": {"hidden": 256, "seed": 0},
    "embedding": {"seed": 0},
    "models": {
        "gru": {"method": "gru_ae", "inherits": "model", "hidden": 128},
        "svd": {"method": "svd", "inherits": "embedding", "dim": 32},
        "nomethod": {"inherits": "model"},
        "badsection": {"method": "x", "inherits": "model.hidden"},
    },
    "combined": {"ens": {"method": "ensemble", "inherits": "embedding", "sources": ["svd"]}},
}


def test_own_entry_overrides_inherited_defaults():
    assert model_config(PARAMS, "gru") == {"hidden": 128, "seed": 0, "method": "gru_ae", "inherits": "model"}
    assert model_config(PARAMS, "svd") == {"seed": 0, "method": "svd", "inherits": "embedding", "dim": 32}


def test_inherited_defaults_are_not_shared_objects():
    model_config(PARAMS, "gru")["seed"] = 5
    assert PARAMS["model"]["seed"] == 0


@pytest.mark.parametrize("name, message", [
    ("missing", "no profile 'missing' under models or combined"),
    ("nomethod", "models.nomethod needs 'method:'"),
    ("badsection", "names 'model.hidden', which is not a section"),
])
def test_bad_entries_are_named(name, message):
    with pytest.raises(UbpError, match=message):
        model_config(PARAMS, name)


def test_combined_profiles_are_profiles_with_their_own_directory():
    assert profile_names(PARAMS) == ["gru", "svd", "nomethod", "badsection", "ens"]
    assert model_config(PARAMS, "ens") == {"seed": 0, "method": "ensemble", "inherits": "embedding", "sources": ["svd"]}
    assert str(profile_dir(PARAMS, "svd")) == "embeddings/svd" and str(profile_dir(PARAMS, "ens")) == "combined/ens"
