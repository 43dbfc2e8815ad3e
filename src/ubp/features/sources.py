"""What the feature families are made of: feature/block specs and the DuckDB views they query.

`prepare(con, ...)` leaves these in a DuckDB connection:

* `clients(client_id, row)` — the requested clients in order; `props` — product_properties;
* `events(client_id, type, ts, age, item, category, price)` — every event of the requested clients
  strictly before the cutoff, all five types in one table. `type` is the short name of
  `TYPE_NAMES`; `age` is the time before the cutoff in (fractional) days, so > 0; `item` is the
  sku (product events), the url (page visits) or a hash of the query vector (searches);
  `category`/`price` come from product_properties (NULL for visits and searches);
* `items(client_id, type, item, category, price, n, age)` — `events` grouped by client, type
  and item: `n` events, `age` of the most recent one;
* `ev_<type>` views over the parquet files (with `name` for product events and `query` for
  searches) for the families that need the vector columns, and `all_<type>` views holding every
  client's events before the cutoff (for the global popularity of skus, categories and urls).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from ubp import schema
from ubp.db import check_size, sql_text, timestamp_sql
from ubp.io import UbpError
from ubp.params import section_config

# event type -> the short name used in column names and in `events.type`
TYPE_NAMES = {
    schema.PRODUCT_BUY: "buy",
    schema.ADD_TO_CART: "add",
    schema.REMOVE_FROM_CART: "remove",
    schema.PAGE_VISIT: "visit",
    schema.SEARCH_QUERY: "search",
}
TYPES = tuple(TYPE_NAMES.values())
PRODUCT_TYPES = tuple(TYPE_NAMES[e] for e in schema.PRODUCT_EVENTS)
ITEM_WORD = {"buy": "skus", "add": "skus", "remove": "skus", "visit": "urls", "search": "queries"}

CAP = "cap"  # a default meaning "the recency cap" (see build.build_features)
NONE_VALUE = -1.0  # default of a mean/min/max of prices or codes when the client has nothing to average


@dataclass(frozen=True)
class Feature:
    name: str
    doc: str
    default: float | str = 0.0  # the value when the client has no events to compute it from


@dataclass(frozen=True)
class Block:
    """One SQL query returning `client_id` plus exactly the named feature columns (one row per client)."""
    query: str
    features: list[Feature]


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def features(self) -> list[Feature]:
        return [f for b in self.blocks for f in b.features]


@dataclass(frozen=True)
class FeaturesConfig:
    """params.yaml's `features:` section, the only home of its defaults (`FeaturesConfig.from_params`).

    `windows` and `session_gap_minutes` decide the columns, `threads` and `recency_cap_days` their
    values (threads only in the last bits, see `build.build_features`); `memory_limit` and
    `temp_directory` bound every stage's DuckDB (ubp.db.connect) and change no result.
    """
    windows: tuple[int, ...] = (7, 14, 28, 60)  # day counts, kept sorted
    session_gap_minutes: float = 30.0
    threads: int = 1  # DuckDB threads of the features table (1: the same bytes every run)
    recency_cap_days: float | None = None  # None: the days from the earliest event to the cutoff
    memory_limit: str | None = None  # a DuckDB size such as "8GB"
    temp_directory: str | None = None  # where DuckDB spills

    def __post_init__(self):
        windows = tuple(self.windows)
        if not windows or any(w <= 0 for w in windows) or len(set(windows)) != len(windows):
            raise UbpError(f"params.yaml: features.windows must be distinct positive day counts, got {list(windows)}")
        object.__setattr__(self, "windows", tuple(sorted(windows)))
        if self.session_gap_minutes <= 0:
            raise UbpError(f"params.yaml: features.session_gap_minutes must be positive, "
                           f"got {self.session_gap_minutes}")
        if self.threads < 1:
            raise UbpError(f"params.yaml: features.threads must be a whole number >= 1, got {self.threads}")
        if self.memory_limit is not None:
            check_size(self.memory_limit, "params.yaml: features.memory_limit")

    @classmethod
    def from_params(cls, params: Mapping) -> "FeaturesConfig":
        return section_config(params, cls, "features")

    @property
    def resources(self) -> dict:
        """ubp.db.connect's memory_limit / temp_directory: every stage's DuckDB connections take them from here."""
        return {"memory_limit": self.memory_limit, "temp_directory": self.temp_directory}


def window_suffixes(settings: FeaturesConfig) -> list[tuple[str, str]]:
    """(column suffix, SQL condition on `age`) for each window and for all history."""
    return [(f"{w}d", f"age <= {w}") for w in settings.windows] + [("all", "TRUE")]


def window_doc(suffix: str) -> str:
    return "over all history" if suffix == "all" else f"in the last {suffix[:-1]} days"


def ratio(numerator: str, denominator: str) -> str:
    """numerator / denominator, 0 when the denominator is 0 (or NULL)."""
    return f"coalesce(CASE WHEN ({denominator}) > 0 THEN ({numerator})::DOUBLE / ({denominator}) END, 0)"



def parquet(path: Path) -> str:
    return f"read_parquet({sql_text(path)})"


def prepare(con, events_dir: Path, properties_path: Path, client_ids: np.ndarray, cutoff: datetime) -> None:
    """Create `clients`, the `ev_*`/`all_*` views and the `events` table (see the module docstring)."""
    ids = np.asarray(client_ids, dtype=np.int64)
    con.register("clients_arrow", pa.table({"client_id": ids, "row": np.arange(len(ids), dtype=np.int64)}))
    con.execute("CREATE OR REPLACE TEMP TABLE clients AS SELECT * FROM clients_arrow")
    con.unregister("clients_arrow")
    cut = timestamp_sql(cutoff)
    props = parquet(properties_path)
    con.execute(f"CREATE OR REPLACE TEMP VIEW props AS SELECT * FROM {props}")
    for event, short in TYPE_NAMES.items():
        source = parquet(Path(events_dir) / f"{event}.parquet")
        before = f"e.{schema.TIMESTAMP} < {cut}"
        age = f"date_diff('second', e.{schema.TIMESTAMP}, {cut}) / 86400.0 AS age"
        if event in schema.PRODUCT_EVENTS:
            payload = "e.sku AS item, p.category, p.price, p.name"
            join = "LEFT JOIN props p ON e.sku = p.sku"
        elif event == schema.PAGE_VISIT:
            payload, join = "e.url AS item, NULL::BIGINT AS category, NULL::BIGINT AS price", ""
        else:  # a query is a vector; its hash stands for it where a distinct key is needed
            payload = "(hash(e.query) >> 1)::BIGINT AS item, NULL::BIGINT AS category, NULL::BIGINT AS price, e.query"
            join = ""
        con.execute(f"CREATE OR REPLACE TEMP VIEW all_{short} AS SELECT e.* FROM {source} e WHERE {before}")
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW ev_{short} AS SELECT e.client_id, e.{schema.TIMESTAMP} AS ts, {age}, {payload} "
            f"FROM {source} e {join} WHERE {before} AND e.client_id IN (SELECT client_id FROM clients)")
    con.execute(f"CREATE OR REPLACE TYPE event_type AS ENUM ({', '.join(sql_text(t) for t in TYPES)})")
    union = " UNION ALL ".join(
        f"SELECT client_id, {sql_text(t)}::event_type AS type, ts, age, item, category, price FROM ev_{t}" for t in TYPES)
    # Materialized once: every family scans it, and it is far smaller than the raw files
    # (relevant clients only); DuckDB spills it to its temp directory when memory runs short.
    con.execute(f"CREATE OR REPLACE TEMP TABLE events AS {union}")
    # Several families need per-item counts; grouping once is cheaper than grouping per family.
    con.execute("CREATE OR REPLACE TEMP TABLE items AS SELECT client_id, type, item, any_value(category) AS category, "
                "any_value(price) AS price, count(*) AS n, min(age) AS age FROM events GROUP BY client_id, type, item")


def data_span_days(con, cutoff: datetime) -> float | None:
    """Days from the earliest event of any client (any type, before the cutoff) to the cutoff; None if no events."""
    first = con.execute("SELECT min(m) FROM (" + " UNION ALL ".join(
        f"SELECT min({schema.TIMESTAMP}) AS m FROM all_{t}" for t in TYPES) + ")").fetchone()[0]
    return None if first is None else (cutoff - first).total_seconds() / 86400.0
