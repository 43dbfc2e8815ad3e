"""A hand-made event log in the canonical layout, small enough to compute every feature by hand.

Cutoff 2022-08-01 00:00:00. Client 1 does a bit of everything, client 2 nothing, client 3 has one
visit 40 days back (the earliest event: the recency cap is 40 days) and events at/after the
cutoff, client 4 only page visits around the 30-minute session threshold; client 99 is not
requested but its purchases count towards global popularity.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ubp import schema

CUTOFF = datetime(2022, 8, 1)
D, H, M, S = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)
CLIENTS = np.array([1, 2, 3, 4], dtype=np.int64)
PROPERTIES = {  # sku: (category, price, name base: name[i] = base + i)
    10: (100, 10, 10), 11: (100, 30, 20), 12: (200, 50, 40), 13: (300, 70, 60)}


def vector(base: int) -> list[int]:
    return [base + i for i in range(schema.VECTOR_DIM)]


EVENTS = {
    schema.PRODUCT_BUY: [
        (1, CUTOFF - 30 * D, 10), (1, CUTOFF - 7 * D - S, 11), (1, CUTOFF - 7 * D, 10),
        (3, CUTOFF, 12), (3, CUTOFF + D, 13),  # at and after the cutoff: ignored
        (99, CUTOFF - 5 * D, 12), (99, CUTOFF - 4 * D, 12)],
    schema.ADD_TO_CART: [(1, CUTOFF - 31 * D, 10), (1, CUTOFF - 3 * D, 12), (1, CUTOFF - 1 * D, 11)],
    schema.REMOVE_FROM_CART: [(1, CUTOFF - 2 * D, 12)],
    schema.PAGE_VISIT: [
        (1, CUTOFF - 60 * M, 5), (1, CUTOFF - 50 * M, 5), (1, CUTOFF - 10 * M, 6),
        (3, CUTOFF - 40 * D, 7), (3, CUTOFF + H, 7),
        # Wednesday 2022-07-20: 06:00, 06:30 (gap exactly 30 min: same session), 07:00:01 (new session)
        (4, datetime(2022, 7, 20, 6), 5), (4, datetime(2022, 7, 20, 6, 30), 6), (4, datetime(2022, 7, 20, 7, 0, 1), 5)],
    schema.SEARCH_QUERY: [(1, CUTOFF - 10 * D, vector(1)), (1, CUTOFF - 10 * D + 5 * M, vector(3))],
}


def write_log(root) -> tuple:
    """Write the canonical files under root; return (events_dir, properties_path)."""
    events_dir = root / "events"
    events_dir.mkdir(parents=True)
    for event, rows in EVENTS.items():
        value = schema.EVENT_VALUE_COLUMN[event]
        value_type = pa.list_(pa.uint8()) if value == schema.QUERY else pa.int64()
        table = pa.table({
            schema.CLIENT_ID: pa.array([r[0] for r in rows], pa.int64()),
            schema.TIMESTAMP: pa.array([r[1] for r in rows], pa.timestamp("us")),
            value: pa.array([r[2] for r in rows], value_type)})
        pq.write_table(table, events_dir / f"{event}.parquet")
    skus = sorted(PROPERTIES)
    props = pa.table({
        schema.SKU: pa.array(skus, pa.int64()),
        schema.CATEGORY: pa.array([PROPERTIES[s][0] for s in skus], pa.int64()),
        schema.PRICE: pa.array([PROPERTIES[s][1] for s in skus], pa.int64()),
        schema.NAME: pa.array([vector(PROPERTIES[s][2]) for s in skus], pa.list_(pa.uint8()))})
    properties_path = root / f"{schema.PROPERTIES}.parquet"
    pq.write_table(props, properties_path)
    return events_dir, properties_path


@pytest.fixture(scope="session")
def log_paths(tmp_path_factory):
    return write_log(tmp_path_factory.mktemp("features_log"))


@pytest.fixture(scope="session")
def table(log_paths):
    from ubp.features import build_features
    return build_features(*log_paths, CLIENTS, CUTOFF)


@pytest.fixture(scope="session")
def row(table):
    """row(client_id) -> that client's features as a dict."""
    by_id = table.set_index(schema.CLIENT_ID)
    return lambda client: by_id.loc[client].to_dict()
