"""build_features on the hand-made log of conftest.py, against values computed by hand."""
from math import cos, log, pi, sin, sqrt

import numpy as np
import pytest

from tests.features.conftest import CLIENTS, CUTOFF
from ubp import schema
from ubp.features import FEATURE_DOCS, build_features
from ubp.features.build import FeaturesConfig

CAP = 40.0  # days from the earliest event (client 3's visit) to the cutoff
SECOND = 1 / 86400


def close(value, expected):
    return value == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_shape_order_and_types(table):
    assert list(table.columns[:1]) == [schema.CLIENT_ID]
    assert table[schema.CLIENT_ID].tolist() == CLIENTS.tolist()
    assert list(table.columns[1:]) == list(FEATURE_DOCS)
    assert (table.dtypes.iloc[1:] == np.float32).all()
    assert np.isfinite(table.iloc[:, 1:].to_numpy()).all()


def test_window_boundaries(row):
    r = row(1)
    # buys 30 days, 7 days + 1 s and exactly 7 days before the cutoff: the last one is in the 7-day window
    assert [r[f"buy_count_{w}"] for w in ("7d", "14d", "28d", "60d", "all")] == [1, 2, 2, 3, 3]
    assert r["any_count_all"] == 12
    assert close(r["buy_count_change_7d"], 0.0)  # 1 in the last 7 days vs 1 in the 7 before
    assert close(r["buy_count_change_14d"], log(3))
    assert close(r["buy_count_change_28d"], log(3 / 2))


def test_distinct_counts(row):
    r = row(1)
    assert [r[f"buy_distinct_items_{w}"] for w in ("7d", "14d", "all")] == [1, 2, 2]
    assert r["buy_distinct_categories_all"] == 1 and r["add_distinct_categories_all"] == 2
    assert r["visit_distinct_items_all"] == 2 and r["search_distinct_items_all"] == 2
    assert [r[f"buy_distinct_days_{w}"] for w in ("7d", "14d", "all")] == [1, 2, 3]


def test_recency_and_gaps(row):
    r = row(1)
    assert close(r["buy_days_since_last"], 7) and close(r["buy_days_since_first"], 30)
    assert close(r["any_days_since_first"], 31)
    assert close(r["buy_gap_mean"], 11.5) and close(r["buy_gap_min"], SECOND) and close(r["buy_gap_max"], 23 - SECOND)
    assert close(r["visit_gap_mean"], 25 / 1440) and close(r["visit_gap_std"], 15 / 1440)


def test_sessions(row):
    r = row(1)  # nine sessions: only the two searches, the two last buys and the first two visits share one
    assert r["session_count_all"] == 9 and r["session_count_7d"] == 5  # a session starting 7 d + 1 s back is out
    assert close(r["session_single_share"], 6 / 9) and close(r["session_buy_share"], 2 / 9)
    assert close(r["session_cart_share"], 3 / 9)
    assert close(r["session_duration_max"], 10) and r["session_size_max"] == 2
    r4 = row(4)  # 06:00, 06:30 (a gap of exactly 30 min stays in the session), 07:00:01
    assert r4["session_count_all"] == 2
    assert close(r4["session_duration_max"], 30) and close(r4["session_size_mean"], 1.5)
    assert close(r4["session_gap_mean"], 1801 / 86400)


def test_cycles(row):
    r4 = row(4)
    hours = [6, 6.5, 7 + 1 / 3600]
    assert close(r4["any_hour_sin"], np.mean([sin(2 * pi * h / 24) for h in hours]))
    assert close(r4["any_hour_cos"], np.mean([cos(2 * pi * h / 24) for h in hours]))
    assert close(r4["any_weekday_sin"], sin(2 * pi * 2 / 7))  # Wednesday
    assert r4["any_morning_share"] == 1 and r4["any_weekend_share"] == 0
    assert r4["buy_hour_sin"] == 0  # no purchases


def test_entropy_and_gini(row):
    r = row(1)  # product events by category: 100 x5, 200 x2; purchases all in 100; urls 5, 5, 6
    assert close(r["product_category_entropy"], -(5 / 7 * log(5 / 7) + 2 / 7 * log(2 / 7)))
    assert close(r["product_category_gini"], 3 / 14)
    assert r["buy_category_entropy"] == 0 and r["buy_category_gini"] == 0
    assert close(r["visit_url_entropy"], -(2 / 3 * log(2 / 3) + 1 / 3 * log(1 / 3)))
    assert close(r["visit_url_gini"], 1 / 6)


def test_exploration_and_funnel(row):
    r = row(1)
    assert close(r["buy_exploration"], 2 / 3) and close(r["product_sku_exploration"], 3 / 7)
    assert close(r["product_category_exploration"], 2 / 7)
    assert close(r["funnel_visit_per_search"], 1.5) and close(r["funnel_buy_per_add"], 1)
    assert close(r["funnel_remove_per_add"], 1 / 3) and r["funnel_cart_abandonment"] == 0
    # added skus 10 (bought after), 12 (never bought), 11 (bought only before the add)
    assert close(r["funnel_sku_conversion"], 1 / 3)
    assert close(r["funnel_category_conversion"], 1 / 2)
    assert close(r["buy_share"], 3 / 12)


def test_prices_popularity_and_codes(row):
    r = row(1)
    assert close(r["buy_price_mean"], 50 / 3) and close(r["buy_price_std"], sqrt(800 / 9))
    assert r["buy_price_min"] == 10 and r["buy_price_max"] == 30 and close(r["add_price_mean"], 30)
    # global purchases before the cutoff: sku 10 x2, 11 x1, 12 x2 (client 99); categories 100 x3, 200 x2
    assert close(r["buy_sku_popularity"], (2 * log(3) + log(2)) / 3)
    assert close(r["product_category_popularity"], (5 * log(4) + 2 * log(3)) / 7)
    assert close(r["visit_url_popularity"], (2 * log(5) + log(3)) / 3)  # url 5 visited 4 times, url 6 twice
    for i in (0, 15):
        assert close(r[f"buy_name_mean_{i}"], 40 / 3 + i) and close(r[f"add_name_mean_{i}"], 70 / 3 + i)
        assert close(r[f"search_query_mean_{i}"], 2 + i)


def test_client_without_events_gets_the_defaults(row):
    r = row(2)
    assert r["any_count_all"] == 0 and r["session_count_all"] == 0 and r["funnel_buy_per_add"] == 0
    assert close(r["buy_days_since_last"], CAP) and close(r["any_gap_mean"], CAP) and r["any_gap_std"] == 0
    assert r["buy_price_mean"] == -1 and r["search_query_mean_0"] == -1 and r["any_hour_sin"] == 0


def test_events_at_or_after_the_cutoff_are_ignored(row):
    r = row(3)
    assert r["buy_count_all"] == 0 and r["visit_count_all"] == 1
    assert close(r["any_days_since_last"], CAP) and close(r["visit_gap_mean"], CAP)
    assert close(row(1)["buy_sku_popularity"], (2 * log(3) + log(2)) / 3)  # client 3's buy of 12 not counted


def test_rows_follow_client_ids_and_are_deterministic(log_paths, table):
    order = np.array([4, 2, 1, 3, 5], dtype=np.int64)  # 5 is unknown: a row of defaults
    shuffled = build_features(*log_paths, order, CUTOFF)
    assert shuffled[schema.CLIENT_ID].tolist() == order.tolist()
    by_id = table.set_index(schema.CLIENT_ID)
    np.testing.assert_array_equal(shuffled.set_index(schema.CLIENT_ID).loc[[4, 2, 1, 3]].to_numpy(),
                                  by_id.loc[[4, 2, 1, 3]].to_numpy())
    np.testing.assert_array_equal(shuffled.iloc[4, 1:].to_numpy(), by_id.loc[2].to_numpy())
    again = build_features(*log_paths, CLIENTS, CUTOFF, FeaturesConfig(threads=1))
    assert again.equals(table)


def test_windows_are_a_parameter(log_paths):
    table = build_features(*log_paths, CLIENTS, CUTOFF, FeaturesConfig(windows=(3, 31), session_gap_minutes=60.0,
                                                                      recency_cap_days=100.0))
    r = table.set_index(schema.CLIENT_ID).loc[1]
    assert r["buy_count_3d"] == 0 and r["buy_count_31d"] == 3 and r["add_count_31d"] == 3
    assert "buy_count_7d" not in table.columns
    assert r["session_count_all"] == 8  # the visits 40 min apart now share a session
    assert table.set_index(schema.CLIENT_ID).loc[2, "buy_days_since_last"] == 100


def test_every_column_is_documented():
    assert len(FEATURE_DOCS) > 250
    assert all(doc.strip() for doc in FEATURE_DOCS.values())
