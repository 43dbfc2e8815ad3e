"""The ensemble profile: per-source normalisation, balance, weights, PCA, imputation, the width cap,
missing and skipped sources, row order, determinism, and stored == computed sources."""
import dataclasses
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from ubp import ensemble as E
from ubp import schema
from ubp.config import as_dict
from ubp.embed import compute
from ubp.profile_store import write as write_profile_dir, write_skipped
from ubp.io import UbpError
from ubp.models.base import EmbedContext
from ubp.params import model_config
from tests.conftest import REPO

CUTOFF = datetime(2022, 9, 1)


def context(tmp_path: Path, ids) -> EmbedContext:
    return EmbedContext(client_ids=np.asarray(ids, dtype=np.int64), events_dir=tmp_path / "events",
                        properties_path=tmp_path / "properties.parquet", cutoff=CUTOFF)


def store(root: Path, name: str, ids, x, ctx: EmbedContext, method: str = "external", **meta) -> None:
    """An embeddings/<name>/ directory as embed.run writes it, made for ctx."""
    meta = {"profile": name, "method": method, "events": str(ctx.events_dir),
            "cutoff": ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT), **meta}
    write_profile_dir(root / name, np.asarray(ids, np.int64), meta, np.asarray(x, np.float16))


def params_file(tmp_path: Path, models: dict | None = None) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"embedding": {"seed": 0}, "models": models or {}}))
    return path


def loaded(x, present=None, method="external", **source) -> E.Loaded:
    x = np.asarray(x, dtype=np.float64)
    present = np.ones(len(x), bool) if present is None else np.asarray(present)
    return E.Loaded(E.Source("s", **source), method, x, present, "stored")


# --- settings --------------------------------------------------------------------------------------

def test_sources_as_a_list_or_a_mapping():
    assert E.parse_sources(["a", "b"]) == [E.Source("a"), E.Source("b")]
    parsed = E.parse_sources({"b": {"weight": 2, "pca": 8, "norm": "l2"}, "a": None})
    assert parsed == [E.Source("b", 2.0, 8, "l2"), E.Source("a")]  # order as given


@pytest.mark.parametrize("spec, message", [
    ([], "non-empty"),
    ({"a": {"weight": 0}}, "weight"),
    ({"a": {"pca": 0}}, "pca"),
    ({"a": {"norm": "minmax"}}, "norm"),
    ({"a": {"scale": 1}}, "unknown key"),
])
def test_bad_settings_are_named(spec, message):
    with pytest.raises(UbpError, match=message):
        E.parse_sources(spec)


def test_auto_is_quantile_for_tabular_methods_and_l2_otherwise():
    assert E.resolve_norm("auto", "features") == E.resolve_norm("auto", "aggregated") == "quantile"
    assert E.resolve_norm("auto", "svd") == E.resolve_norm("auto", "gru_ae") == "l2"
    assert E.resolve_norm("standard", "features") == "standard"


# --- normalisation, balance, weights, imputation (hand-checked) -----------------------------------

def test_l2_makes_rows_unit_length_and_keeps_zero_rows():
    out = E.normalise([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], "l2")
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]])


def test_standard_centres_and_scales_columns_and_zeroes_constant_ones():
    out = E.normalise([[1.0, 5.0], [3.0, 5.0]], "standard")
    np.testing.assert_allclose(out, [[-1.0, 0.0], [1.0, 0.0]])


def test_none_keeps_the_profile_as_published_and_block_only_centres_and_balances_it():
    x = [[1.0, 10.0], [3.0, 10.0], [2.0, 40.0]]
    np.testing.assert_array_equal(E.normalise(x, "none"), np.float32(x))
    # centred: [[-1 -10] [1 -10] [0 20]]; mean squared row norm (101 + 101 + 400) / 3
    out = E.block(loaded(x, norm="none"), 3)
    k = 1 / np.sqrt(602 / 3)
    np.testing.assert_allclose(out, k * np.array([[-1.0, -10.0], [1.0, -10.0], [0.0, 20.0]]), rtol=1e-6)


def test_center_false_keeps_the_offsets_and_imputes_the_uncentred_mean():
    x = [[1.0, 10.0], [3.0, 10.0]]
    item = loaded(x, present=[True, False, True], norm="none", center=False, weight=2.0)
    out = E.block(item, 3, balance="none")
    np.testing.assert_allclose(out, [[2.0, 20.0], [4.0, 20.0], [6.0, 20.0]])  # middle: mean row x weight
    assert E.parse_sources({"a": {"center": False}})[0].center is False
    with pytest.raises(UbpError, match="center"):
        E.parse_sources({"a": {"center": "no"}})


def test_quantile_maps_ranks_to_a_standardised_normal():
    # three distinct values -> quantiles 0, 1/2, 1 -> symmetric normal scores -> standardised +-sqrt(3/2)
    out = E.normalise([[10.0, 7.0], [1.0, 7.0], [100.0, 7.0]], "quantile", n_quantiles=3)
    np.testing.assert_allclose(out[:, 0], [0.0, -np.sqrt(1.5), np.sqrt(1.5)], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], 0.0)


def test_block_normalises_centres_balances_and_imputes_the_mean():
    # l2 -> [.6 .8], [0 1]; mean [.3 .9]; centred +-[.3 -.1]; mean squared norm .1; weight 2 -> x 2/sqrt(.1)
    item = loaded([[3.0, 4.0], [0.0, 2.0]], present=[True, False, True], weight=2.0, norm="l2")
    out = E.block(item, 3)
    k = 2 / np.sqrt(0.1)
    np.testing.assert_allclose(out, [[0.3 * k, -0.1 * k], [0.0, 0.0], [-0.3 * k, 0.1 * k]], rtol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose((out[[0, 2]] ** 2).sum(1).mean(), 4.0, rtol=1e-6)  # weight squared
    np.testing.assert_allclose(out[1], out[[0, 2]].mean(0), atol=1e-6)  # the missing client: the mean row


def test_sources_of_any_width_bring_the_same_total_variance():
    rng = np.random.default_rng(0)
    narrow, wide = rng.standard_normal((50, 4)), 30 * rng.standard_normal((50, 300))
    for x in (narrow, wide):
        out = E.block(loaded(x, norm="standard"), 50)
        np.testing.assert_allclose((out ** 2).sum(1).mean(), 1.0, rtol=1e-5)


def test_balance_dimension_gives_each_column_unit_variance_on_average():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 6)) * np.arange(1, 7)
    out = E.block(loaded(x, norm="l2", weight=2.0), 40, balance="dimension")
    np.testing.assert_allclose((out ** 2).sum(1).mean(), 6 * 4.0, rtol=1e-5)


def test_balance_none_only_applies_the_weight():
    x = [[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]]
    out = E.block(loaded(x, weight=3.0, norm="standard"), 3, balance="none")
    np.testing.assert_allclose(out, 3.0 * E.normalise(x, "standard"), rtol=1e-6)
    with pytest.raises(UbpError, match="balance"):
        E.block(loaded(x), 3, balance="sideways")


def test_pca_keeps_the_leading_components():
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((200, 1)) * np.array([[3.0, 2.0, 1.0, 0.0]])
    x = signal + 0.01 * rng.standard_normal((200, 4))
    out = E.block(loaded(x, pca=1, norm="standard"), 200)
    assert out.shape == (200, 1)
    assert abs(np.corrcoef(out[:, 0], signal[:, 0])[0, 1]) > 0.99


def test_more_columns_than_max_dim_is_an_error_naming_the_widths():
    rng = np.random.default_rng(3)
    wide, narrow = loaded(rng.standard_normal((4, 1500))), loaded(rng.standard_normal((4, 600)))
    wide.source, narrow.source = E.Source("wide"), E.Source("narrow")
    with pytest.raises(UbpError, match=r"2100 columns \(wide 1500, narrow 600\) exceed max_dim 2048"):
        E.combine([wide, narrow], 4, {})
    wide.source = E.Source("wide", pca=2)
    assert E.combine([wide, narrow], 4, {}).shape == (4, 602)
    with pytest.raises(UbpError, match="exceed max_dim 100"):
        E.combine([narrow], 4, {"max_dim": 100})


# --- sources from embeddings/<source>/ --------------------------------------------------------------

def test_rows_follow_ctx_client_ids_and_missing_clients_get_the_mean(tmp_path):
    ctx = context(tmp_path, [30, 10, 40, 20])
    x = np.array([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    store(tmp_path / "emb", "a", [20, 30, 10], x, ctx)  # no row for client 40
    cfg = {"sources": {"a": {"norm": "standard"}}, "embeddings_dir": tmp_path / "emb",
           "params_file": params_file(tmp_path)}
    out = E.build(ctx, cfg)
    expected = E.block(loaded(x[[1, 2, 0]], present=[True, True, False, True], norm="standard"), 4)
    np.testing.assert_array_equal(out, expected.astype(np.float16))
    assert out.dtype == np.float16 and np.isfinite(out).all()
    assert not out[2].any()  # client 40: imputed
    assert ctx.info["sources"]["a"]["imputed_clients"] == 1 and ctx.info["sources"]["a"]["from"] == "stored"


def test_concatenation_order_weights_and_determinism(tmp_path):
    ctx = context(tmp_path, range(20))
    rng = np.random.default_rng(2)
    store(tmp_path / "emb", "a", range(20), rng.standard_normal((20, 3)), ctx)
    store(tmp_path / "emb", "b", range(20), rng.standard_normal((20, 5)), ctx)
    base = {"embeddings_dir": tmp_path / "emb", "params_file": params_file(tmp_path)}
    out = E.build(ctx, {**base, "sources": {"b": {"weight": 2.0}, "a": None}})
    assert out.shape == (20, 8)
    np.testing.assert_allclose((out[:, :5].astype(np.float64) ** 2).sum(1).mean(), 4.0, rtol=1e-2)
    np.testing.assert_allclose((out[:, 5:].astype(np.float64) ** 2).sum(1).mean(), 1.0, rtol=1e-2)
    again = E.build(dataclasses.replace(ctx, info={}), {**base, "sources": {"b": {"weight": 2.0}, "a": None}})
    assert out.tobytes() == again.tobytes()


def test_a_source_that_does_not_exist_is_an_error(tmp_path):
    ctx = context(tmp_path, range(5))
    cfg = {"sources": ["nope"], "embeddings_dir": tmp_path / "emb", "params_file": params_file(tmp_path)}
    with pytest.raises(UbpError, match="'nope' is not a profile"):
        E.build(ctx, cfg)


def test_a_skipped_source_is_left_out_with_a_warning(tmp_path, caplog):
    ctx = context(tmp_path, range(6))
    store(tmp_path / "emb", "a", range(6), np.arange(12.0).reshape(6, 2), ctx)
    write_skipped(tmp_path / "emb" / "oracle", "no latent state: synthetic data only")
    (tmp_path / "emb" / "oracle" / "meta.json").write_text(json.dumps(
        {"events": str(ctx.events_dir), "cutoff": ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)}))
    cfg = {"sources": ["oracle", "a"], "embeddings_dir": tmp_path / "emb", "params_file": params_file(tmp_path)}
    out = E.build(ctx, cfg)
    assert out.shape == (6, 2) and ctx.info["skipped_sources"] == ["oracle"]
    assert "oracle skipped" in caplog.text
    with pytest.raises(UbpError, match="all were skipped"):
        E.build(ctx, {**cfg, "sources": ["oracle"]})


def test_an_ensemble_cannot_be_a_source(tmp_path):
    ctx = context(tmp_path, range(3))
    path = params_file(tmp_path, {"inner": {"method": "ensemble", "inherits": "embedding"}})
    with pytest.raises(UbpError, match="is a combined profile"):
        E.build(ctx, {"sources": ["inner"], "embeddings_dir": tmp_path / "emb", "params_file": path})


def test_embeddings_made_for_other_events_are_not_used(tmp_path):
    ctx = context(tmp_path, range(4))
    other = dataclasses.replace(ctx, cutoff=datetime(2022, 10, 1))
    store(tmp_path / "emb", "a", range(4), np.eye(4), other)
    assert not E.made_for(tmp_path / "emb" / "a", ctx) and E.made_for(tmp_path / "emb" / "a", other)
    with pytest.raises(UbpError, match="made for other events or another cutoff"):
        E.build(ctx, {"sources": ["a"], "embeddings_dir": tmp_path / "emb", "params_file": params_file(tmp_path)})


def test_a_meta_without_events_and_cutoff_counts_as_the_local_pipelines(tmp_path):
    write_profile_dir(tmp_path / "a", np.arange(2, dtype=np.int64), {"profile": "a"}, np.eye(2, dtype=np.float16))
    local = dataclasses.replace(context(tmp_path, range(2)), events_dir=schema.SPLIT_DIR / "input")
    assert E.made_for(tmp_path / "a", local)
    assert not E.made_for(tmp_path / "a", context(tmp_path, range(2)))  # e.g. all events, for an entry


# --- real profiles on the tiny data -----------------------------------------------------------------

def test_stored_and_computed_sources_give_the_same_ensemble(tiny_context, tmp_path):
    """`aggregated` computed on the fly (nothing stored) == read back from a stored profile; stale
    settings in a stored meta.json make it compute again."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = {"sources": ["aggregated"], "embeddings_dir": tmp_path / "emb", "params_file": REPO / "params.yaml"}
    ctx = dataclasses.replace(tiny_context, info={})
    computed = E.build(ctx, cfg)
    assert ctx.info["sources"]["aggregated"]["from"] == "computed"
    assert ctx.info["sources"]["aggregated"]["norm"] == "quantile"
    source_cfg = model_config(params, "aggregated")
    matrix = compute("aggregated", source_cfg, dataclasses.replace(tiny_context, info={}))
    store(tmp_path / "emb", "aggregated", tiny_context.client_ids, matrix, tiny_context, method="aggregated",
          config=as_dict(source_cfg))
    ctx = dataclasses.replace(tiny_context, info={})
    assert E.build(ctx, cfg).tobytes() == computed.tobytes()
    assert ctx.info["sources"]["aggregated"]["from"] == "stored"
    store(tmp_path / "emb", "aggregated", tiny_context.client_ids, np.zeros_like(matrix), tiny_context,
          method="aggregated", config={**as_dict(source_cfg), "top_n": 3})
    ctx = dataclasses.replace(tiny_context, info={})
    assert E.build(ctx, cfg).tobytes() == computed.tobytes()
    assert ctx.info["sources"]["aggregated"]["from"] == "computed"
