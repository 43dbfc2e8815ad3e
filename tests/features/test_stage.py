"""The `features` stage, the catalogue, the load-or-build helper and the `features` profile."""
import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from tests.conftest import refuses_before_any_work
from tests.features.conftest import CLIENTS, CUTOFF
from ubp import schema
from ubp.embed import compute
from ubp.features import load_features, load_or_build, write_catalogue
from ubp.features.build import FEATURES_FILE, META_FILE, FeaturesConfig, main, run
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
    run(FeaturesConfig(windows=(7, 14, 28, 60), threads=1), split_dir, canonical_dir, out_dir, catalogue)
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


def test_a_rerun_writes_the_same_bytes(stage_dirs, tmp_path):
    """DVC hashes the stage's output: a re-run on unchanged inputs must not change it (no timings)."""
    again = tmp_path / "features"
    run(FeaturesConfig(windows=(7, 14, 28, 60), threads=1), stage_dirs["split"], stage_dirs["canonical"], again,
        tmp_path / "features.md")
    for name in (FEATURES_FILE, META_FILE):
        assert (again / name).read_bytes() == (stage_dirs["out"] / name).read_bytes(), name


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


def test_load_or_build_uses_the_stored_table_when_it_fits(stage_dirs, log_paths, table):
    path = stage_dirs["out"] / FEATURES_FILE
    loaded = load_or_build(context(log_paths, CLIENTS[::-1], path))
    assert loaded[schema.CLIENT_ID].tolist() == CLIENTS[::-1].tolist()
    built = load_or_build(context(log_paths, CLIENTS[::-1]))  # no features_path: computed
    pd.testing.assert_frame_equal(loaded, built)


def test_a_table_of_another_cutoff_is_refused(stage_dirs, log_paths):
    path = stage_dirs["out"] / FEATURES_FILE
    other_cutoff = context(log_paths, CLIENTS, path, cutoff=CUTOFF.replace(day=2))
    with pytest.raises(UbpError, match=r"features\.parquet: built for cutoff 2022-08-01 00:00:00 .* but cutoff "
                                       r"2022-08-02 00:00:00 was asked for"):
        load_or_build(other_cutoff)


def test_a_table_of_other_settings_is_refused(stage_dirs, log_paths):
    ctx = context(log_paths, CLIENTS, stage_dirs["out"] / FEATURES_FILE)
    for other in ({"windows": (7, 14)}, {"session_gap_minutes": 60.0}, {"recency_cap_days": 90.0}, {"threads": 2}):
        with pytest.raises(UbpError, match="built with settings"):
            load_or_build(replace(ctx, feature_settings=FeaturesConfig(**other)))
    # resources (and the windows' order) are no settings of the table: still the stored one
    same = FeaturesConfig(windows=(60, 28, 14, 7), memory_limit="1GB", temp_directory="/nonexistent/never/used")
    assert load_or_build(replace(ctx, feature_settings=same)).equals(load_or_build(ctx))


def test_a_table_without_its_json_is_refused(stage_dirs, log_paths, tmp_path):
    path = tmp_path / FEATURES_FILE
    shutil.copyfile(stage_dirs["out"] / FEATURES_FILE, path)
    with pytest.raises(UbpError, match=f"{path}: no {META_FILE} beside it.*asked for cutoff 2022-08-01"):
        load_or_build(context(log_paths, CLIENTS, path))


def test_stage_honours_memory_limit_and_temp_directory(stage_dirs, table, tmp_path):
    """A memory limit and a spill directory change nothing in the table; features.json does not record them."""
    out = tmp_path / "features"
    run(FeaturesConfig(memory_limit="200MB", temp_directory=str(tmp_path / "spill")),
        stage_dirs["split"], stage_dirs["canonical"], out, tmp_path / "features.md")
    pd.testing.assert_frame_equal(pd.read_parquet(out / FEATURES_FILE), table)
    assert (tmp_path / "spill").is_dir() and not list((tmp_path / "spill").iterdir())  # spills removed on close
    settings = json.loads((out / META_FILE).read_text())["settings"]
    assert settings == {"threads": 1, "windows": [7, 14, 28, 60], "session_gap_minutes": 30.0, "recency_cap_days": None}
    with pytest.raises(UbpError, match="features.memory_limit"):
        FeaturesConfig(memory_limit="lots")


def test_every_recompute_path_takes_the_context_settings(log_paths):
    """No stored table: the features are computed with ctx.feature_settings (params.yaml's features:),
    never with a model's own dict (rcae/dcn inherit `threads: 2` from model:)."""
    from ubp.models import features, rcae
    from ubp.models._training import tabular_input

    ctx = replace(context(log_paths, CLIENTS), feature_settings=FeaturesConfig(windows=(3, 31)))
    table = load_or_build(ctx)
    assert "any_count_3d" in table.columns and "any_count_7d" not in table.columns
    assert tabular_input(ctx, rcae.Config()).shape == (len(CLIENTS), table.shape[1] - 1)
    assert compute("features", features.Config(), ctx).shape == (len(CLIENTS), table.shape[1] - 1)


def test_features_profile(stage_dirs, log_paths):
    from ubp.models.features import Config

    cfg = Config()
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


@pytest.mark.parametrize("features, match", [
    ({"windws": [7]}, r"unknown key 'features\.windws'; did you mean 'windows'"),
    ({"threads": "2"}, r"features\.threads must be an integer, got '2'"),
    ({"windows": [7, 7]}, r"features\.windows must be distinct positive day counts"),
    ({"memory_limit": "lots"}, r"features\.memory_limit: expected a size"),
])
def test_stage_refuses_bad_settings_before_any_work(stage_dirs, tmp_path, monkeypatch, features, match):
    """With its inputs all there, a typo or a wrong type in `features:` still stops the stage unwritten."""
    out = tmp_path / "run"
    argv = ["--split-dir", str(stage_dirs["split"]), "--canonical-dir", str(stage_dirs["canonical"]),
            "--out-dir", str(out / "features"), "--catalogue", str(out / "features.md")]
    refuses_before_any_work(main, argv, {"features": features}, match, out, monkeypatch)
