"""The one test every embedding method must pass (shape, ids, finite, deterministic, as of its
cutoff, informative).

Each method runs with its settings from the repository's params.yaml on the tiny generated
dataset. "As of its cutoff": given ALL events (the canonical files, target windows included) and
the split's cutoff, a profile is byte-identical to the one from the split's input, so a profile
computed as of an earlier date (stacking's shifted cutoff, SPEC §9.11) never sees later events.
"Informative" = a cross-validated logistic probe predicts whether a client buys in the
train-target window better from the profile than from noise.
"""
from dataclasses import replace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import StandardScaler

from ubp import schema
from ubp.embed import compute
from ubp.models import available_methods
from ubp.params import load_params, model_config, profile_names
from tests.conftest import REPO

PARAMS = load_params(REPO / "params.yaml")
PROFILES = profile_names(PARAMS)
# Methods that read no events: the oracle is the generator's state at the split, random is noise.
NOT_FROM_EVENTS = {"oracle", "random"}


def probe_auc(x: np.ndarray, y: np.ndarray) -> float:
    x = StandardScaler().fit_transform(x.astype(np.float64))
    return float(cross_val_score(LogisticRegression(C=0.1, max_iter=500), x, y, cv=4, scoring="roc_auc").mean())


@pytest.fixture(scope="module")
def bought(tiny_dirs, tiny_context):
    labels = np.load(tiny_dirs["targets"] / "labels" / f"{schema.CONVERSION}.npz")
    row = {c: i for i, c in enumerate(labels["client_ids"].tolist())}
    return 1 - labels["y_train"][[row[c] for c in tiny_context.client_ids.tolist()], 0]


def test_every_method_has_a_profile():
    methods = {model_config(PARAMS, name).get("method", name) for name in PROFILES}
    assert methods == set(available_methods())


@pytest.mark.parametrize("name", PROFILES)
def test_profile_contract(name, tiny_dirs, tiny_context, bought):
    cfg = model_config(PARAMS, name)
    first = compute(name, cfg, replace(tiny_context, info={}))
    assert first.dtype == np.float16 and first.shape[0] == len(tiny_context.client_ids)
    assert 1 <= first.shape[1] <= 2048
    assert np.isfinite(first).all()
    if cfg["method"] in NOT_FROM_EVENTS:
        assert np.array_equal(first, compute(name, cfg, replace(tiny_context, info={}))), "not deterministic"
    else:
        all_events = replace(tiny_context, events_dir=tiny_dirs["canonical"], info={})
        assert np.array_equal(first, compute(name, cfg, all_events)), \
            "not deterministic, or the profile reads events at or after its cutoff"
    if name != "random":
        noise = compute("random", model_config(PARAMS, "random"), tiny_context)
        ours, floor = probe_auc(first, bought), probe_auc(noise, bought)
        assert ours > floor + 0.05, f"{name}: probe AUROC {ours:.3f} vs noise {floor:.3f}"
