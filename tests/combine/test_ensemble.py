"""The ensemble profile: its typed settings, per-source normalisation, balance, weights, PCA,
imputation, the width cap, missing and skipped sources, row order, determinism, and stored ==
computed sources."""
import dataclasses
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from ubp import schema
from ubp.combine import blocks as B
from ubp.combine import ensemble as E
from ubp.combine import sources as S
from ubp.config import as_dict, build
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


def loaded(x, present=None, method="external", **source) -> S.Loaded:
    x = np.asarray(x, dtype=np.float64)
    present = np.ones(len(x), bool) if present is None else np.asarray(present)
    return S.Loaded(S.Source(name="s", **source), method, x, present, "stored")


def ens(tmp_path: Path | None = None, **settings) -> E.Config:
    """An ensemble Config balancing by source (what these hand-checked values assume), reading stored
    sources from tmp_path/emb with no base profile in params."""
    where = {} if tmp_path is None else {"embeddings_dir": str(tmp_path / "emb"),
                                         "params_file": str(params_file(tmp_path))}
    return E.Config(**{"balance": "source", **where, **settings})


SOURCE = ens()


# --- settings --------------------------------------------------------------------------------------

def test_sources_in_order_each_with_its_settings():
    cfg = build(E.Config, {"sources": ["b", "a"], "per_source": {"b": {"weight": 2, "pca": 8, "norm": "l2"}}},
                "ensemble")
    assert S.listed(cfg) == [S.Source(name="b", weight=2.0, pca=8, norm="l2"), S.Source(name="a")]


@pytest.mark.parametrize("section, message", [
    ({"sources": []}, "sources must name at least one profile"),
    ({"sources": ["a", "b", "a"]}, "sources lists a more than once"),
    ({"sources": {"a": {"norm": "l2"}}}, r"ensemble\.sources must be a list of strings"),
    ({"per_source": {"a": {"weight": 0}}}, r"per_source\.a\.weight must be a number > 0"),
    ({"per_source": {"a": {"pca": 0}}}, r"per_source\.a\.pca must be a whole number"),
    ({"per_source": {"a": {"norm": "minmax"}}}, r"ensemble\.per_source\.a\.norm must be one of 'auto'"),
    ({"per_source": {"a": {"center": "no"}}}, r"ensemble\.per_source\.a\.center must be true or false"),
    ({"per_source": {"a": {"scale": 1}}}, r"unknown key 'ensemble\.per_source\.a\.scale'"),
    ({"balance": "sideways"}, r"ensemble\.balance must be one of 'source', 'dimension', 'none'"),
    ({"max_dims": 64}, r"unknown key 'ensemble\.max_dims'; did you mean 'max_dim'"),
    ({"max_dim": "64"}, r"ensemble\.max_dim must be an integer"),
])
def test_a_typo_or_a_wrong_type_is_refused_naming_the_key(section, message):
    with pytest.raises(UbpError, match=message):
        build(E.Config, {"sources": ["a"], **section}, "ensemble")


def test_per_source_may_only_name_sources_or_base_profiles(tmp_path):
    cfg = ens(tmp_path, sources=("a",), per_source={"afinity": S.SourceSettings(norm="l2")})
    with pytest.raises(UbpError, match="per_source.afinity is neither a source nor a profile"):
        S.check_names(cfg, {"models": {"affinity": {}}})
    with pytest.raises(UbpError, match="did you mean 'affinity'"):
        S.check_names(cfg, {"models": {"affinity": {}}})
    S.check_names(cfg, {"models": {"afinity": {}}})  # settings for a candidate that is not a source yet


def test_auto_is_quantile_for_tabular_methods_and_l2_otherwise():
    assert B.resolve_norm("auto", "features") == B.resolve_norm("auto", "aggregated") == "quantile"
    assert B.resolve_norm("auto", "svd") == B.resolve_norm("auto", "gru_ae") == "l2"
    assert B.resolve_norm("standard", "features") == "standard"


# --- normalisation, balance, weights, imputation (hand-checked) -----------------------------------

def test_l2_makes_rows_unit_length_and_keeps_zero_rows():
    out = B.normalise([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], "l2", SOURCE)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]])


def test_standard_centres_and_scales_columns_and_zeroes_constant_ones():
    out = B.normalise([[1.0, 5.0], [3.0, 5.0]], "standard", SOURCE)
    np.testing.assert_allclose(out, [[-1.0, 0.0], [1.0, 0.0]])


def test_none_keeps_the_profile_as_published_and_block_only_centres_and_balances_it():
    x = [[1.0, 10.0], [3.0, 10.0], [2.0, 40.0]]
    np.testing.assert_array_equal(B.normalise(x, "none", SOURCE), np.float32(x))
    # centred: [[-1 -10] [1 -10] [0 20]]; mean squared row norm (101 + 101 + 400) / 3
    out = B.block(loaded(x, norm="none"), 3, SOURCE)
    k = 1 / np.sqrt(602 / 3)
    np.testing.assert_allclose(out, k * np.array([[-1.0, -10.0], [1.0, -10.0], [0.0, 20.0]]), rtol=1e-6)


def test_center_false_keeps_the_offsets_and_imputes_the_uncentred_mean():
    x = [[1.0, 10.0], [3.0, 10.0]]
    item = loaded(x, present=[True, False, True], norm="none", center=False, weight=2.0)
    out = B.block(item, 3, ens(balance="none"))
    np.testing.assert_allclose(out, [[2.0, 20.0], [4.0, 20.0], [6.0, 20.0]])  # middle: mean row x weight


def test_quantile_maps_ranks_to_a_standardised_normal():
    # three distinct values -> quantiles 0, 1/2, 1 -> symmetric normal scores -> standardised +-sqrt(3/2)
    out = B.normalise([[10.0, 7.0], [1.0, 7.0], [100.0, 7.0]], "quantile", ens(n_quantiles=3))
    np.testing.assert_allclose(out[:, 0], [0.0, -np.sqrt(1.5), np.sqrt(1.5)], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], 0.0)


def test_block_normalises_centres_balances_and_imputes_the_mean():
    # l2 -> [.6 .8], [0 1]; mean [.3 .9]; centred +-[.3 -.1]; mean squared norm .1; weight 2 -> x 2/sqrt(.1)
    item = loaded([[3.0, 4.0], [0.0, 2.0]], present=[True, False, True], weight=2.0, norm="l2")
    out = B.block(item, 3, SOURCE)
    k = 2 / np.sqrt(0.1)
    np.testing.assert_allclose(out, [[0.3 * k, -0.1 * k], [0.0, 0.0], [-0.3 * k, 0.1 * k]], rtol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose((out[[0, 2]] ** 2).sum(1).mean(), 4.0, rtol=1e-6)  # weight squared
    np.testing.assert_allclose(out[1], out[[0, 2]].mean(0), atol=1e-6)  # the missing client: the mean row


def test_sources_of_any_width_bring_the_same_total_variance():
    rng = np.random.default_rng(0)
    narrow, wide = rng.standard_normal((50, 4)), 30 * rng.standard_normal((50, 300))
    for x in (narrow, wide):
        out = B.block(loaded(x, norm="standard"), 50, SOURCE)
        np.testing.assert_allclose((out ** 2).sum(1).mean(), 1.0, rtol=1e-5)


def test_balance_dimension_gives_each_column_unit_variance_on_average():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 6)) * np.arange(1, 7)
    out = B.block(loaded(x, norm="l2", weight=2.0), 40, ens(balance="dimension"))
    np.testing.assert_allclose((out ** 2).sum(1).mean(), 6 * 4.0, rtol=1e-5)


def test_balance_none_only_applies_the_weight():
    x = [[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]]
    out = B.block(loaded(x, weight=3.0, norm="standard"), 3, ens(balance="none"))
    np.testing.assert_allclose(out, 3.0 * B.normalise(x, "standard", SOURCE), rtol=1e-6)
    with pytest.raises(UbpError, match="balance"):
        B.block(loaded(x), 3, ens(balance="sideways"))


def test_pca_keeps_the_leading_components():
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((200, 1)) * np.array([[3.0, 2.0, 1.0, 0.0]])
    x = signal + 0.01 * rng.standard_normal((200, 4))
    out = B.block(loaded(x, pca=1, norm="standard"), 200, SOURCE)
    assert out.shape == (200, 1)
    assert abs(np.corrcoef(out[:, 0], signal[:, 0])[0, 1]) > 0.99


def test_more_columns_than_max_dim_is_an_error_naming_the_widths():
    rng = np.random.default_rng(3)
    wide, narrow = loaded(rng.standard_normal((4, 1500))), loaded(rng.standard_normal((4, 600)))
    wide.source, narrow.source = S.Source(name="wide"), S.Source(name="narrow")
    with pytest.raises(UbpError, match=r"2100 columns \(wide 1500, narrow 600\) exceed max_dim 2048"):
        B.combine([wide, narrow], 4, SOURCE)
    wide.source = S.Source(name="wide", pca=2)
    assert B.combine([wide, narrow], 4, SOURCE).shape == (4, 602)
    with pytest.raises(UbpError, match="exceed max_dim 100"):
        B.combine([narrow], 4, ens(max_dim=100))


# --- sources from embeddings/<source>/ --------------------------------------------------------------

def test_rows_follow_ctx_client_ids_and_missing_clients_get_the_mean(tmp_path):
    ctx = context(tmp_path, [30, 10, 40, 20])
    x = np.array([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    store(tmp_path / "emb", "a", [20, 30, 10], x, ctx)  # no row for client 40
    cfg = ens(tmp_path, sources=("a",), per_source={"a": S.SourceSettings(norm="standard")})
    out = E.build(ctx, cfg)
    expected = B.block(loaded(x[[1, 2, 0]], present=[True, True, False, True], norm="standard"), 4, SOURCE)
    np.testing.assert_array_equal(out, expected.astype(np.float16))
    assert out.dtype == np.float16 and np.isfinite(out).all()
    assert not out[2].any()  # client 40: imputed
    assert ctx.info["sources"]["a"]["imputed_clients"] == 1 and ctx.info["sources"]["a"]["from"] == "stored"


def test_concatenation_order_weights_and_determinism(tmp_path):
    ctx = context(tmp_path, range(20))
    rng = np.random.default_rng(2)
    store(tmp_path / "emb", "a", range(20), rng.standard_normal((20, 3)), ctx)
    store(tmp_path / "emb", "b", range(20), rng.standard_normal((20, 5)), ctx)
    cfg = ens(tmp_path, sources=("b", "a"), per_source={"b": S.SourceSettings(weight=2.0)})
    out = E.build(ctx, cfg)
    assert out.shape == (20, 8)
    np.testing.assert_allclose((out[:, :5].astype(np.float64) ** 2).sum(1).mean(), 4.0, rtol=1e-2)
    np.testing.assert_allclose((out[:, 5:].astype(np.float64) ** 2).sum(1).mean(), 1.0, rtol=1e-2)
    again = E.build(dataclasses.replace(ctx, info={}), cfg)
    assert out.tobytes() == again.tobytes()


def test_a_source_that_does_not_exist_is_an_error(tmp_path):
    ctx = context(tmp_path, range(5))
    with pytest.raises(UbpError, match="'nope' is not a profile"):
        E.build(ctx, ens(tmp_path, sources=("nope",)))


def test_a_skipped_source_is_left_out_with_a_warning(tmp_path, caplog):
    ctx = context(tmp_path, range(6))
    store(tmp_path / "emb", "a", range(6), np.arange(12.0).reshape(6, 2), ctx)
    write_skipped(tmp_path / "emb" / "oracle", "no latent state: synthetic data only")
    (tmp_path / "emb" / "oracle" / "meta.json").write_text(json.dumps(
        {"events": str(ctx.events_dir), "cutoff": ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)}))
    out = E.build(ctx, ens(tmp_path, sources=("oracle", "a")))
    assert out.shape == (6, 2) and ctx.info["skipped_sources"] == ["oracle"]
    assert "oracle skipped" in caplog.text
    with pytest.raises(UbpError, match="all were skipped"):
        E.build(ctx, ens(tmp_path, sources=("oracle",)))


def test_an_ensemble_cannot_be_a_source(tmp_path):
    ctx = context(tmp_path, range(3))
    path = params_file(tmp_path, {"inner": {"method": "ensemble", "inherits": "embedding"}})
    with pytest.raises(UbpError, match="is a combined profile"):
        E.build(ctx, ens(sources=("inner",), embeddings_dir=str(tmp_path / "emb"), params_file=str(path)))


def test_embeddings_made_for_other_events_are_not_used(tmp_path):
    ctx = context(tmp_path, range(4))
    other = dataclasses.replace(ctx, cutoff=datetime(2022, 10, 1))
    store(tmp_path / "emb", "a", range(4), np.eye(4), other)
    assert not S.made_for(tmp_path / "emb" / "a", ctx) and S.made_for(tmp_path / "emb" / "a", other)
    with pytest.raises(UbpError, match="made for other events or another cutoff"):
        E.build(ctx, ens(tmp_path, sources=("a",)))


def test_a_meta_without_events_and_cutoff_counts_as_the_local_pipelines(tmp_path):
    write_profile_dir(tmp_path / "a", np.arange(2, dtype=np.int64), {"profile": "a"}, np.eye(2, dtype=np.float16))
    local = dataclasses.replace(context(tmp_path, range(2)), events_dir=schema.SPLIT_DIR / "input")
    assert S.made_for(tmp_path / "a", local)
    assert not S.made_for(tmp_path / "a", context(tmp_path, range(2)))  # e.g. all events, for an entry


# --- real profiles on the tiny data -----------------------------------------------------------------

def test_stored_and_computed_sources_give_the_same_ensemble(tiny_context, tmp_path):
    """`aggregated` computed on the fly (nothing stored) == read back from a stored profile; stale
    settings in a stored meta.json make it compute again."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = ens(sources=("aggregated",), embeddings_dir=str(tmp_path / "emb"), params_file=str(REPO / "params.yaml"))
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
