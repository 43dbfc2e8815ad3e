"""The synthetic generator: determinism, the exact raw layout, realistic proportions, the oracle."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ubp import schema as S
from ubp.data.synthetic import TINY, SyntheticConfig, generate, main, synthetic_config
from ubp.io import UbpError

VECTOR = re.compile(r"^\[\s*(\d{1,3}\s+){15}\d{1,3}\s*\]$")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "raw"
    generate(out, synthetic_config(TINY))
    return out


@pytest.fixture(scope="module")
def tables(raw) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(raw / f"{name}.parquet") for name in (*S.EVENT_TYPES, S.PROPERTIES)}


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def split_start(buys: pd.DataFrame) -> pd.Timestamp:
    end = pd.to_datetime(buys[S.TIMESTAMP], format=S.TIMESTAMP_FORMAT).max()
    return (end - pd.Timedelta(days=27)).normalize()


def test_same_seed_same_bytes_other_seed_differs(raw, tmp_path):
    generate(tmp_path / "again", synthetic_config(TINY))
    assert digests(tmp_path / "again") == digests(raw)
    generate(tmp_path / "other", synthetic_config({**TINY, "seed": TINY.get("seed", 0) + 1}))
    other = digests(tmp_path / "other")
    assert other.keys() == digests(raw).keys()
    assert other[f"{S.PRODUCT_BUY}.parquet"] != digests(raw)[f"{S.PRODUCT_BUY}.parquet"]


def test_exact_raw_layout(raw):
    expected = {
        **{name: [(S.CLIENT_ID, pa.int64()), (S.TIMESTAMP, pa.string()), (S.EVENT_VALUE_COLUMN[name], pa.int64())]
           for name in (*S.PRODUCT_EVENTS, S.PAGE_VISIT)},
        S.SEARCH_QUERY: [(S.CLIENT_ID, pa.int64()), (S.TIMESTAMP, pa.string()), (S.QUERY, pa.string())],
        S.PROPERTIES: [(S.SKU, pa.int64()), (S.CATEGORY, pa.int64()), (S.PRICE, pa.int64()), (S.NAME, pa.string())],
    }
    for name, fields in expected.items():
        schema = pq.read_schema(raw / f"{name}.parquet")
        assert [(f.name, f.type) for f in schema] == fields, name
    relevant = np.load(raw / S.RELEVANT_CLIENTS_FILE)
    assert relevant.dtype == np.int64 and relevant.ndim == 1 and len(relevant) == TINY["n_relevant"]


def test_timestamps_and_vector_strings_parse(tables):
    for name in S.EVENT_TYPES:
        ts = pd.to_datetime(tables[name][S.TIMESTAMP], format=S.TIMESTAMP_FORMAT)  # raises on a bad one
        assert (ts.dt.second % 5 == 0).mean() > 0.9, name
        assert not ts.is_monotonic_increasing, f"{name}: rows should be in random order"
    for strings in (tables[S.SEARCH_QUERY][S.QUERY], tables[S.PROPERTIES][S.NAME]):
        assert strings.map(lambda s: bool(VECTOR.match(s))).all()
        codes = np.array([[int(x) for x in re.findall(r"\d+", s)] for s in strings])
        assert codes.shape[1] == S.VECTOR_DIM and codes.min() >= 0 and codes.max() <= 255
        assert strings.str.contains("\n").any() and strings.str.contains(r"^\[\d", regex=True).any()
        assert strings.str.contains(r"^\[  \d", regex=True).any()


def test_catalogue_covers_events_and_prices_are_uniform(tables):
    props = tables[S.PROPERTIES]
    assert props[S.SKU].is_unique
    used = pd.concat([tables[n][S.SKU] for n in S.PRODUCT_EVENTS]).unique()
    assert np.isin(used, props[S.SKU]).all()
    assert len(used) < len(props), "some SKUs should never occur"
    counts = props[S.PRICE].value_counts()
    assert props[S.PRICE].between(0, S.N_PRICE_BUCKETS - 1).all() and len(counts) == S.N_PRICE_BUCKETS
    assert counts.min() >= 0.8 * counts.max()
    assert props[S.CATEGORY].nunique() == TINY["n_categories"]


def test_ids_are_large_and_sparse(raw, tables):
    relevant = np.load(raw / S.RELEVANT_CLIENTS_FILE)
    clients = pd.concat([tables[n][S.CLIENT_ID] for n in S.EVENT_TYPES]).unique()
    assert len(np.unique(relevant)) == len(relevant)
    assert clients.max() < 3e7 and clients.max() > 10 * len(clients)
    assert np.isin(relevant, clients).mean() > 0.9


def test_proportions_like_the_real_data(raw, tables):
    n = {name: len(tables[name]) for name in S.EVENT_TYPES}
    assert n[S.PAGE_VISIT] > 5 * n[S.SEARCH_QUERY]
    assert n[S.SEARCH_QUERY] > n[S.ADD_TO_CART] > n[S.REMOVE_FROM_CART]
    assert n[S.ADD_TO_CART] > 1.5 * n[S.PRODUCT_BUY]
    assert 0.5 < n[S.REMOVE_FROM_CART] / n[S.PRODUCT_BUY] < 2
    per_client = pd.concat([tables[name][S.CLIENT_ID] for name in S.EVENT_TYPES]).value_counts()
    relevant = np.load(raw / S.RELEVANT_CLIENTS_FILE)
    is_rel = per_client.index.isin(relevant)
    assert per_client[is_rel].median() > 5 * per_client[~is_rel].median()
    assert per_client.quantile(0.99) > 10 * per_client.median(), "events per client should be heavy-tailed"


def test_past_buyers_mostly_skip_a_window_and_new_skus_sell(tables):
    buys = tables[S.PRODUCT_BUY].assign(ts=lambda d: pd.to_datetime(d[S.TIMESTAMP], format=S.TIMESTAMP_FORMAT))
    start = split_start(buys)
    past = set(buys.loc[buys.ts < start, S.CLIENT_ID])
    window = set(buys.loc[(buys.ts >= start) & (buys.ts < start + pd.Timedelta(days=14)), S.CLIENT_ID])
    assert 0.6 < 1 - len(past & window) / len(past) < 0.97
    seen = set()
    for name in S.PRODUCT_EVENTS:
        ev = tables[name]
        seen |= set(ev.loc[pd.to_datetime(ev[S.TIMESTAMP], format=S.TIMESTAMP_FORMAT) < start, S.SKU])
    new = buys.loc[(buys.ts >= start) & ~buys[S.SKU].isin(seen), S.SKU]
    assert new.nunique() >= 30 and len(new) >= 60


def test_oracle_matches_relevant_clients_and_predicts_purchases(raw, tables):
    ids = np.load(raw / S.ORACLE_SUBDIR / "client_ids.npy")
    state = np.load(raw / S.ORACLE_SUBDIR / "state.npy")
    columns = json.loads((raw / S.ORACLE_SUBDIR / "columns.json").read_text())
    assert ids.dtype == np.int64 and state.dtype == np.float32
    assert np.array_equal(np.sort(ids), np.sort(np.load(raw / S.RELEVANT_CLIENTS_FILE)))
    assert state.shape == (len(ids), len(columns)) and len(set(columns)) == len(columns) and len(columns) <= 2048
    assert np.isfinite(state).all()
    # Future purchases depend on the state: the expected-buys column ranks target-window buyers.
    buys = tables[S.PRODUCT_BUY].assign(ts=lambda d: pd.to_datetime(d[S.TIMESTAMP], format=S.TIMESTAMP_FORMAT))
    future = buys[buys.ts >= split_start(buys)][S.CLIENT_ID].value_counts()
    bought = np.isin(ids, future.index)
    score = state[:, columns.index("log_buys_14d")]
    assert 0.1 < bought.mean() < 0.6
    assert score[bought].mean() > score[~bought].mean() + 0.5


def test_unknown_config_key_is_an_error():
    with pytest.raises(UbpError, match=r"unknown key 'data\.synthetic\.n_relevnat'; did you mean 'n_relevant'"):
        synthetic_config({"n_relevnat": 10})


def test_main_dir_source_writes_only_a_marker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data:\n  source: dir\n  raw_dir: /my/data\n")
    assert main([]) == 0
    assert [p.name for p in (tmp_path / S.SYNTHETIC_DIR).iterdir()] == ["SKIPPED.txt"]
    assert "/my/data" in (tmp_path / S.SYNTHETIC_DIR / "SKIPPED.txt").read_text()


def test_main_synthetic_source_generates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(f"data:\n  source: synthetic\n  synthetic: {json.dumps(TINY)}\n")
    assert main([]) == 0
    assert (tmp_path / S.SYNTHETIC_DIR / S.RELEVANT_CLIENTS_FILE).exists()
    assert (tmp_path / S.SYNTHETIC_DIR / S.ORACLE_SUBDIR / "state.npy").exists()


def test_oracle_carries_expected_purchases_per_label_kind(raw):
    from ubp.models.oracle import transform

    state = np.load(raw / S.ORACLE_SUBDIR / "state.npy")
    columns = json.loads((raw / S.ORACLE_SUBDIR / "columns.json").read_text())
    for prefix in ("buys_category_", "buys_sku_", "buys_price_"):
        cols = [j for j, c in enumerate(columns) if c.startswith(prefix)]
        assert cols, prefix
        block = state[:, cols]
        assert np.isfinite(block).all() and (block >= 0).all() and block.sum() > 0
    assert sum(c.startswith("buys_price_") for c in columns) == S.N_PRICE_BUCKETS
    for name in ("p_none_w1", "p_none_w2", "buy_sessions_w1", "buy_sessions_w2"):
        col = state[:, columns.index(name)]
        assert np.isfinite(col).all() and col.std() > 0
    assert ((state[:, columns.index("p_none_w1")] >= 0) & (state[:, columns.index("p_none_w1")] <= 1)).all()
    smooth = transform(state, columns)
    assert np.isfinite(smooth).all()


def test_oracle_has_a_column_for_every_open_task_label(tiny_dirs):
    columns = json.loads((tiny_dirs["synthetic"] / S.ORACLE_SUBDIR / "columns.json").read_text())
    for task, prefix in ((S.PROPENSITY_SKU, "buys_sku_"), (S.PROPENSITY_CATEGORY, "buys_category_"),
                         (S.PROPENSITY_NEW_SKU, "buys_sku_")):
        labels = np.load(tiny_dirs["targets"] / S.label_file(task))
        missing = [int(v) for v in labels if f"{prefix}{int(v)}" not in columns]
        assert not missing, f"{task}: no oracle column for {missing[:5]}"


# --- the `scale` preset: the real release's shape (SPEC §2), written block by block ---------------
SMALL = {"scale": 0.002, "block_clients": 10_000}  # 2,000 relevant + 35,400 other clients, 4 blocks


@pytest.fixture(scope="module")
def scaled(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scaled") / "raw"
    generate(out, synthetic_config(SMALL))
    return out


def shape_stats(raw: Path) -> dict:
    """The SPEC §2 shape statistics of a raw dataset (what reports/bench/data_stats.md shows)."""
    ev = {name: pd.read_parquet(raw / f"{name}.parquet", columns=[S.CLIENT_ID, S.TIMESTAMP]) for name in S.EVENT_TYPES}
    relevant = np.load(raw / S.RELEVANT_CLIENTS_FILE)
    n = {name: len(t) for name, t in ev.items()}
    per_client = pd.concat([t[S.CLIENT_ID] for t in ev.values()]).value_counts()
    rel_counts = {name: ev[name][S.CLIENT_ID][ev[name][S.CLIENT_ID].isin(relevant)].value_counts().median()
                  for name in (S.PAGE_VISIT, S.SEARCH_QUERY)}
    buys = ev[S.PRODUCT_BUY].assign(ts=lambda d: pd.to_datetime(d[S.TIMESTAMP], format=S.TIMESTAMP_FORMAT))
    start = split_start(buys)
    past = set(buys.loc[(buys.ts < start) & buys[S.CLIENT_ID].isin(relevant), S.CLIENT_ID])
    window = set(buys.loc[(buys.ts >= start) & (buys.ts < start + pd.Timedelta(days=14)), S.CLIENT_ID])
    bought = set(buys.loc[buys.ts < start, S.CLIENT_ID])
    return {
        "relevant with a buy before the split": len(bought & set(relevant)) / len(relevant),
        **{f"{name}/buys": n[name] / n[S.PRODUCT_BUY] for name in S.EVENT_TYPES if name != S.PRODUCT_BUY},
        **{f"events p{q}": per_client.quantile(q / 100) for q in (50, 90, 99)},
        "relevant median page_visit": rel_counts[S.PAGE_VISIT],
        "relevant median search_query": rel_counts[S.SEARCH_QUERY],
        "relevant past buyers without a window buy": 1 - len(past & window) / len(past),
        "clients": len(per_client),
    }


# SPEC §2's figure for each statistic, and how far a 2,000-relevant-client sample may stray from it.
REAL_SHAPE = {
    "page_visit/buys": (89.6, 0.2), "search_query/buys": (5.7, 0.2), "add_to_cart/buys": (3.1, 0.2),
    "remove_from_cart/buys": (1.0, 0.3), "events p50": (2, 0.01), "events p90": (18, 0.2), "events p99": (119, 0.25),
    "relevant median page_visit": (18, 0.15), "relevant median search_query": (5, 0.2),
    "relevant past buyers without a window buy": (0.94, 0.03), "relevant with a buy before the split": (0.745, 0.1),
}


def test_scale_preset_has_the_real_shape(scaled):
    stats = shape_stats(scaled)
    off = {k: (round(stats[k], 3), real) for k, (real, tol) in REAL_SHAPE.items() if abs(stats[k] - real) > tol * real}
    assert not off, f"(this data, real) beyond tolerance: {off}"
    assert len(np.load(scaled / S.RELEVANT_CLIENTS_FILE)) == 2_000
    assert stats["clients"] > 0.98 * (2_000 + 35_400)  # every non-relevant client did something


def test_block_size_changes_the_draws_not_the_shape(scaled, tmp_path):
    generate(tmp_path / "other_blocks", synthetic_config({**SMALL, "block_clients": 25_000}))
    a, b = shape_stats(scaled), shape_stats(tmp_path / "other_blocks")
    for k, (real, tol) in REAL_SHAPE.items():
        assert abs(a[k] - b[k]) <= tol * real, k
    assert digests(tmp_path / "other_blocks") != digests(scaled)


def test_row_groups_and_oracle_row_blocks_change_no_value(tmp_path, monkeypatch):
    from ubp.data import synthetic_output

    cfg = synthetic_config({"scale": 0.0005, "block_clients": 3_000})
    generate(tmp_path / "one", cfg)
    monkeypatch.setattr(synthetic_output, "ROW_GROUP_ROWS", 5_000)
    monkeypatch.setattr(synthetic_output, "ORACLE_CELLS", 15_000)  # ~100 clients per oracle row block
    generate(tmp_path / "many", cfg)
    for name in (*S.EVENT_TYPES, S.PROPERTIES):
        one, many = (pq.ParquetFile(tmp_path / d / f"{name}.parquet") for d in ("one", "many"))
        assert one.read().equals(many.read()), name
        if name == S.PAGE_VISIT:
            assert many.num_row_groups > one.num_row_groups >= 1
    a, b = (np.load(tmp_path / d / S.ORACLE_SUBDIR / "state.npy") for d in ("one", "many"))
    assert a.shape == b.shape and a.shape[0] == 500
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_scaled_data_goes_through_ingest_split_targets(scaled, tmp_path):
    from ubp.data.ingest import ingest
    from ubp.data.split import split
    from ubp.data.targets import build_targets

    ingest(scaled, tmp_path / "canonical")
    split(tmp_path / "canonical", tmp_path / "split")
    build_targets(tmp_path / "canonical", tmp_path / "split", tmp_path / "targets")
    labels = np.load(tmp_path / "targets" / S.label_file(S.PROPENSITY_CATEGORY))
    assert 0 < len(labels) <= S.N_TARGET_LABELS


def test_scale_preset_keys_and_overrides():
    assert synthetic_config({}) == SyntheticConfig()
    cfg = synthetic_config({"scale": 0.01, "n_relevant": 7, "other_rate": 0.2})
    assert (cfg.n_relevant, cfg.other_rate, cfg.n_other, cfg.n_categories) == (7, 0.2, 177_000, 680)
    assert synthetic_config({"scale": 1.0}).n_skus == 1_260_000
    for bad in ({"scale": 0}, {"scale": "big"}, {"block_clients": 0}, {"block_clients": 2.5}):
        with pytest.raises(UbpError, match="scale|block_clients"):
            synthetic_config(bad)


def test_oracle_of_a_blocked_dataset_describes_the_clients_that_were_sampled(scaled):
    # The oracle redraws each block's traits from the block's stream: they must be the sampled ones.
    ids = np.load(scaled / S.ORACLE_SUBDIR / "client_ids.npy")
    state = np.load(scaled / S.ORACLE_SUBDIR / "state.npy")
    columns = json.loads((scaled / S.ORACLE_SUBDIR / "columns.json").read_text())
    buyer = state[:, columns.index("buyer")] == 1
    bought = np.isin(ids, pd.read_parquet(scaled / f"{S.PRODUCT_BUY}.parquet")[S.CLIENT_ID])
    assert not (bought & ~buyer).any(), "a client the oracle calls a non-buyer bought"
    assert bought[buyer].mean() > 0.7  # relevant_first_buy: buyers buy at their first product view


@pytest.mark.parametrize("data, match", [
    ({"synthetic": {"n_relevnat": 5}}, r"unknown key 'data\.synthetic\.n_relevnat'; did you mean 'n_relevant'"),
    ({"sourse": "dir"}, r"unknown key 'data\.sourse'; did you mean 'source'"),
    ({"source": "url"}, r"data\.source must be one of 'synthetic', 'dir', got 'url'"),
    ({"synthetic": {"seed": "x"}}, r"data\.synthetic\.seed must be an integer, got 'x'"),
    ({"synthetic": {"scale": 0}}, r"data\.synthetic\.scale: expected a number in \(0, 10\]"),
])
def test_generate_refuses_bad_settings_before_any_work(tmp_path, monkeypatch, data, match):
    from tests.conftest import refuses_before_any_work

    refuses_before_any_work(main, [], {"data": data}, match, tmp_path, monkeypatch)


def test_find_sorted_is_searchsorted_right():
    from ubp.data.synthetic_catalog import find_sorted

    cum = np.array([0.1, 0.1, 0.5, 0.5, 0.5, 0.9, 1.0])  # ties: side="right" goes past them
    values = np.array([0.5, 0.0, 1.0, 0.1, 0.95, 2.0, 0.5, 0.3])
    assert find_sorted(cum, values).tolist() == [5, 0, 7, 2, 6, 7, 5, 2]
    rng = np.random.default_rng(0)
    big, u = np.cumsum(rng.random(5_000)), rng.random(20_000) * 2_600
    np.testing.assert_array_equal(find_sorted(big, u), np.searchsorted(big, u, side="right"))
    assert find_sorted(cum, np.array([])).shape == (0,)


def test_timestamps_are_the_raw_files_text(monkeypatch):
    from ubp.data import synthetic_output

    monkeypatch.setattr(synthetic_output, "ODD_SECONDS", 0.0)  # no random extra seconds: hand-checkable
    seconds = np.array([0, 59, 86_399, 86_400, 10 * 86_400 + 3_600 + 61])
    text = synthetic_output._timestamps(np.random.default_rng(0), seconds, np.datetime64("2022-06-23", "D"))
    assert text.to_pylist() == ["2022-06-23 00:00:00", "2022-06-23 00:00:59", "2022-06-23 23:59:59",
                                "2022-06-24 00:00:00", "2022-07-03 01:01:01"]
