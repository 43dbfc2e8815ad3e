"""The `features` stage, the catalogue, the load-or-build helper and the `features` profile."""
import json

import numpy as np
import pandas as pd
import pytest

from tests.features.conftest import CLIENTS, CUTOFF
from ubp import schema
from ubp.embed import compute
from ubp.features import load_features, load_or_build, write_catalogue
from ubp.features.build import FEATURES_FILE, META_FILE, run
from ubp.io import UbpError
from ubp.models.base import EmbedContext


@pytest.fixture(scope="module")
def stage_dirs(tmp_path_factory, log_paths):
    """A split/ and canonical/ layout around the hand-made log, and the stage run on it."""
    root = tmp_path_factory.mktemp("stage")
    events_dir, properties_path = log_paths
    split_dir, canonical_dir = root / "split", root / "canonical"
    (split_dir).mkdir()
    (split_dir / "input").symlink_to(events_dir)
    (split_dir / schema.SPLIT_FILE).write_text(json.dumps({"train_target_start": CUTOFF.strftime(schema.TIMESTAMP_FORMAT)}))
    (canonical_dir / "input").mkdir(parents=True)
    (canonical_dir / f"{schema.PROPERTIES}.parquet").symlink_to(properties_path)
    np.save(canonical_dir / schema.RELEVANT_CLIENTS_FILE, CLIENTS)
    out_dir, catalogue = root / "features", root / "reports" / "features.md"
    run({"windows": [7, 14, 28, 60], "threads": 1}, split_dir, canonical_dir, out_dir, catalogue)
    return {"split": split_dir, "canonical": canonical_dir, "out": out_dir, "catalogue": catalogue}


def context(log_paths, client_ids, features_path=None, cutoff=CUTOFF):
    events_dir, properties_path = log_paths
    return EmbedContext(client_ids=np.asarray(client_ids, dtype=np.int64), events_dir=events_dir,
                        properties_path=properties_path, cutoff=cutoff, features_path=features_path)


def test_stage_writes_table_meta_and_catalogue(stage_dirs, table):
    stored = pd.read_parquet(stage_dirs["out"] / FEATURES_FILE)
    pd.testing.assert_frame_equal(stored, table)
    meta = json.loads((stage_dirs["out"] / META_FILE).read_text())
    assert meta["cutoff"] == "2022-08-01 00:00:00" and meta["n_features"] == table.shape[1] - 1
    text = stage_dirs["catalogue"].read_text()
    assert all(f"| `{name}` |" in text for name in table.columns[1:])


def test_catalogue_groups_by_family(tmp_path):
    write_catalogue(tmp_path / "features.md")
    text = (tmp_path / "features.md").read_text()
    assert text.count("## ") == 9 and "| column | definition |" in text


def test_load_reorders_and_checks_ids(stage_dirs):
    path = stage_dirs["out"] / FEATURES_FILE
    order = CLIENTS[::-1]
    assert load_features(path, order)[schema.CLIENT_ID].tolist() == order.tolist()
    with pytest.raises(UbpError, match="client ids"):
        load_features(path, CLIENTS[:2])


def test_load_or_build_prefers_the_stored_table(stage_dirs, log_paths, table):
    path = stage_dirs["out"] / FEATURES_FILE
    loaded = load_or_build(context(log_paths, CLIENTS[::-1], path))
    assert loaded[schema.CLIENT_ID].tolist() == CLIENTS[::-1].tolist()
    built = load_or_build(context(log_paths, CLIENTS[::-1]))  # no features_path: computed
    pd.testing.assert_frame_equal(loaded, built)
    other_cutoff = context(log_paths, CLIENTS, path, cutoff=CUTOFF.replace(day=2))
    assert not load_or_build(other_cutoff).equals(table)  # stored for another cutoff: recomputed


def test_features_profile(stage_dirs, log_paths):
    cfg = {"method": "features"}
    ctx = context(log_paths, CLIENTS)
    first = compute("features", cfg, ctx)
    assert first.shape[0] == len(CLIENTS) and first.shape[1] > 250 and np.isfinite(first).all()
    assert np.array_equal(first, compute("features", cfg, ctx))
    from_stage = compute("features", cfg, context(log_paths, CLIENTS, stage_dirs["out"] / FEATURES_FILE))
    assert np.array_equal(first, from_stage)


def test_quantile_transform_is_normal_and_deterministic():
    from ubp.models.features import quantile_normal
    x = np.random.default_rng(0).exponential(size=(5000, 3)).astype(np.float32)
    z = quantile_normal(x, subsample=1000, seed=0)
    assert z.dtype == np.float32 and abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.1
    assert np.array_equal(z, quantile_normal(x, subsample=1000, seed=0))
