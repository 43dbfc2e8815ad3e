"""The one test every embedding method must pass (shape, ids, finite, deterministic, as of its
cutoff, reads only what it declares, informative), and the registry of methods' settings and traits.

Each method runs with its settings from the repository's params.yaml on the tiny generated
dataset, given only the inputs its module declares (`READS`, see ubp.models.base; a combined
profile also gets what its sources read) — the others point nowhere — and the features and
sequences as their stages stored them. "As of its cutoff": given ALL events (the canonical files,
target windows included) and the split's cutoff, with the tables computed from them, a profile is
byte-identical, so a profile computed as of an earlier date (stacking's shifted cutoff, SPEC
§9.11) never sees later events. "Informative" = a cross-validated logistic probe predicts whether
a client buys in the train-target window better from the profile than from noise.
"""
import dataclasses
import sys
from dataclasses import replace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import StandardScaler

import ubp.models
from ubp import schema
from ubp.embed import compute
from ubp.models import available_methods, base, get_method, method_of, traits
from ubp.params import load_params, model_config, profile_method, profile_names, profile_reads
from tests.conftest import REPO

PARAMS = load_params(REPO / "params.yaml")
PROFILES = profile_names(PARAMS)


def probe_auc(x: np.ndarray, y: np.ndarray) -> float:
    x = StandardScaler().fit_transform(x.astype(np.float64))
    return float(cross_val_score(LogisticRegression(C=0.1, max_iter=500), x, y, cv=4, scoring="roc_auc").mean())


@pytest.fixture(scope="module")
def bought(tiny_dirs, tiny_context):
    labels = np.load(tiny_dirs["targets"] / "labels" / f"{schema.CONVERSION}.npz")
    row = {c: i for i, c in enumerate(labels["client_ids"].tolist())}
    return 1 - labels["y_train"][[row[c] for c in tiny_context.client_ids.tolist()], 0]


@pytest.fixture(scope="module")
def staged(tiny_dirs, tiny_context, tmp_path_factory):
    """tiny_context with params.yaml's features:/sequences: settings and those stages' outputs."""
    from ubp.features.build import FeaturesConfig, run as features_stage
    from ubp.sequences import SequencesConfig, run as sequences_stage

    out = tmp_path_factory.mktemp("stages")
    features, sequences = FeaturesConfig.from_params(PARAMS), SequencesConfig.from_params(PARAMS)
    features_stage(features, tiny_dirs["split"], tiny_dirs["canonical"], out / "features")
    sequences_stage(sequences, tiny_dirs["split"], tiny_dirs["canonical"], out / "sequences")
    return replace(tiny_context, features_path=out / "features" / "features.parquet", sequences_dir=out / "sequences",
                   feature_settings=features, sequence_settings=sequences, info={})


def only(ctx, reads, nowhere):
    """ctx with every input not in `reads` pointing to a path that does not exist."""
    absent = {"events": {"events_dir": nowhere / "events"},
              "properties": {"properties_path": nowhere / "product_properties.parquet"},
              "features": {"features_path": nowhere / "features.parquet"},
              "sequences": {"sequences_dir": nowhere / "sequences"},
              "targets": {"targets_dir": nowhere / "targets"},
              "synthetic": {"synthetic_dir": nowhere / "synthetic"}}
    return replace(ctx, info={}, **{k: v for name, fields in absent.items() if name not in reads
                                    for k, v in fields.items()})


def test_every_method_has_a_profile():
    assert {profile_method(PARAMS, name) for name in PROFILES} == set(available_methods())


@pytest.mark.parametrize("name", PROFILES)
def test_profile_contract(name, tiny_dirs, staged, bought, tmp_path):
    cfg = model_config(PARAMS, name)
    first = compute(name, cfg, only(staged, profile_reads(PARAMS, name), tmp_path / "nowhere"))
    assert first.dtype == np.float16 and first.shape[0] == len(staged.client_ids)
    assert 1 <= first.shape[1] <= 2048
    assert np.isfinite(first).all()
    all_events = replace(staged, events_dir=tiny_dirs["canonical"], features_path=None, sequences_dir=None, info={})
    assert np.array_equal(first, compute(name, cfg, all_events)), \
        "not deterministic, or the profile reads events at or after its cutoff"
    if name != "random":
        noise = compute("random", model_config(PARAMS, "random"), staged)
        ours, floor = probe_auc(first, bought), probe_auc(noise, bought)
        assert ours > floor + 0.05, f"{name}: probe AUROC {ours:.3f} vs noise {floor:.3f}"


def test_a_method_reading_an_undeclared_input_fails_the_contract(staged, tmp_path, monkeypatch):
    """The check above can fail: features declares only the stored table; made to read the events
    too, it finds none."""
    from ubp.models import features

    def reads_events(ctx, cfg):
        assert ctx.events(schema.PRODUCT_BUY).exists(), "events not given"
        return np.zeros((len(ctx.client_ids), 1), np.float32)

    ctx = only(staged, traits("features").reads, tmp_path)
    monkeypatch.setattr(features, "embed", reads_events)
    with pytest.raises(AssertionError, match="events not given"):
        compute("features", features.Config(), ctx)


@pytest.mark.parametrize("method", available_methods())
def test_every_method_declares_its_config_and_traits(method):
    module, cls = get_method(method), get_method(method).Config
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    # a base method's settings extend `embedding:` or `model:`; the ensemble's are its own section (`ensemble:`)
    assert issubclass(cls, base.EmbeddingConfig) or traits(method).combined
    assert cls.__module__ == module.__name__, "a Config of its own: it names the method (ubp.models.method_of)"
    assert method_of(cls()) == method  # the defaults are valid settings
    assert set(traits(method).reads) <= set(base.INPUTS)
    assert not [k for k in ("DEFAULTS", "settings", "NOT_AS_OF") if hasattr(module, k)], "defaults live in Config"


def test_traits_are_read_from_the_method_modules():
    assert {m for m in available_methods() if traits(m).tabular} == {"features", "aggregated"}
    assert {m for m in available_methods() if not traits(m).as_of} == {"oracle"}
    assert {m for m in available_methods() if traits(m).combined} == {"ensemble", "stacked"}
    assert traits("random").reads == () and traits("oracle").reads == ("synthetic",)


TOY = '''
from dataclasses import dataclass

import numpy as np

from ubp.models.base import EmbeddingConfig

TABULAR = True
READS = ()


@dataclass(frozen=True)
class Config(EmbeddingConfig):
    width: int = 2


def embed(ctx, cfg):
    return np.full((len(ctx.client_ids), cfg.width), 3.0, np.float32)
'''


def test_a_new_method_is_one_file_and_one_params_entry(tmp_path, monkeypatch, tiny_context):
    """A module dropped into ubp.models is a method: its Config is its settings (a typo refused), its
    traits reach the ensemble (TABULAR -> the quantile norm) with no list edited anywhere."""
    from ubp.combine.blocks import resolve_norm
    from ubp.io import UbpError

    (tmp_path / "toy.py").write_text(TOY)
    monkeypatch.setattr(ubp.models, "__path__", [*ubp.models.__path__, str(tmp_path)])
    try:
        params = {"embedding": {"seed": 0}, "models": {"t": {"method": "toy", "inherits": "embedding", "width": 3}}}
        cfg = model_config(params, "t")
        assert compute("t", cfg, replace(tiny_context, info={})).shape == (len(tiny_context.client_ids), 3)
        assert resolve_norm("auto", "toy") == "quantile" and resolve_norm("auto", "random") == "l2"
        assert traits("toy").as_of and profile_reads(params, "t") == ()
        params["models"]["t"]["widht"] = 4
        with pytest.raises(UbpError, match="unknown key 'models.t.widht'; did you mean 'width'"):
            model_config(params, "t")
    finally:
        sys.modules.pop("ubp.models.toy", None)
