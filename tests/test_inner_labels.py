"""The inner split's labels: the open tasks' train-window labels from the train window alone, equal to
the targets stage's; shipped label sets and active clients used as that stage uses them."""
import shutil

import numpy as np
import pytest

from ubp import schema
from ubp.data.targets import build_targets
from ubp.inner_labels import TARGET_SUBDIR, open_train_labels
from ubp.io import UbpError


def assert_equal_to_targets(labels: dict, targets_dir) -> None:
    assert tuple(labels) == schema.OPEN_TASKS
    for task, lab in labels.items():
        with np.load(targets_dir / schema.LABELS_SUBDIR / f"{task}.npz") as npz:
            assert np.array_equal(lab["client_ids"], npz["client_ids"]), task
            assert lab["y_train"].dtype == npz["y_train"].dtype and np.array_equal(lab["y_train"], npz["y_train"]), task
            if task != schema.CHURN:
                assert np.array_equal(lab["label_ids"], npz["label_ids"]), task
                assert np.array_equal(lab["popularity"], npz["popularity"]), task


def test_the_open_tasks_train_labels_equal_the_targets_stage(tiny_dirs):
    labels = open_train_labels(tiny_dirs["canonical"], tiny_dirs["split"])
    assert_equal_to_targets(labels, tiny_dirs["targets"])
    churn = labels[schema.CHURN]["y_train"]
    assert 0 < churn.sum() < len(churn)  # both classes: the comparison is not between empty matrices
    for task in (schema.PROPENSITY_CATEGORY, schema.PROPENSITY_SKU):
        assert labels[task]["y_train"].shape[1] > 7 and labels[task]["y_train"].sum() > 0
    assert open_train_labels(tiny_dirs["canonical"], tiny_dirs["split"], n_labels=7)[
        schema.PROPENSITY_SKU]["label_ids"].tolist() == labels[schema.PROPENSITY_SKU]["label_ids"][:7].tolist()


def test_shipped_label_sets_and_active_clients_are_read_as_the_targets_stage_reads_them(tiny_dirs, tmp_path):
    canonical = tmp_path / "canonical"
    shutil.copytree(tiny_dirs["canonical"], canonical)
    shipped = canonical / TARGET_SUBDIR
    shipped.mkdir()
    relevant = np.load(canonical / schema.RELEVANT_CLIENTS_FILE)
    np.save(shipped / schema.ACTIVE_CLIENTS_FILE, relevant[::3])
    skus = np.load(tiny_dirs["targets"] / schema.label_file(schema.PROPENSITY_SKU))[::-1][:10]
    np.save(shipped / schema.label_file(schema.PROPENSITY_SKU), skus)
    np.save(shipped / schema.popularity_file(schema.PROPENSITY_SKU), np.arange(10, 0, -1))
    labels = open_train_labels(canonical, tiny_dirs["split"])
    assert np.array_equal(labels[schema.CHURN]["client_ids"], relevant[::3])
    assert np.array_equal(labels[schema.PROPENSITY_SKU]["label_ids"], skus)
    build_targets(canonical, tiny_dirs["split"], tmp_path / "targets")
    assert_equal_to_targets(labels, tmp_path / "targets")
    (shipped / schema.popularity_file(schema.PROPENSITY_SKU)).unlink()
    with pytest.raises(UbpError, match="must be provided together"):
        open_train_labels(canonical, tiny_dirs["split"])


def test_a_missing_input_is_named(tiny_dirs, tmp_path):
    with pytest.raises(UbpError, match="relevant_clients.npy: file not found"):
        open_train_labels(tmp_path, tiny_dirs["split"])
    with pytest.raises(UbpError, match="train_target.parquet: file not found"):
        open_train_labels(tiny_dirs["canonical"], tmp_path)
