"""Feature families about *when* a client acts: activity per window, recency, gaps, sessions, cycles.

Windows: an event is in the w-day window when it happened at most w days before the cutoff,
i.e. in [cutoff - w days, cutoff); an event exactly w days before the cutoff is inside.
"""
from __future__ import annotations

from ubp.features.sources import (CAP, ITEM_WORD, PRODUCT_TYPES, TYPES, Block, Family, Feature, FeaturesConfig, ratio,
                                  window_doc, window_suffixes)

SCOPES = (*TYPES, "any")  # "any": all five event types together


def _is(scope: str) -> str:
    return "TRUE" if scope == "any" else f"type = '{scope}'"


def _what(scope: str) -> str:
    return "events of any type" if scope == "any" else f"'{scope}' events"


def _counts_block(settings: FeaturesConfig) -> Block:
    """Counts per window, their change against the window before, and recency.

    Aggregated per (client, type) first, so the per-window filters run once per event, not once
    per event and type; the per-type columns are then picked out of those few rows per client.
    """
    per_type = ["count(*) AS c_all", "min(age) AS last", "max(age) AS first"]
    for w in settings.windows:
        per_type += [f"count(*) FILTER (WHERE age <= {w}) AS c_{w}d",
                     f"count(*) FILTER (WHERE age > {w} AND age <= {2 * w}) AS p_{w}d"]
    picked, outer, features = [], [], []
    for scope in SCOPES:
        pick = "" if scope == "any" else f" FILTER (WHERE type = '{scope}')"
        for suffix, _ in window_suffixes(settings):
            name = f"{scope}_count_{suffix}"
            picked.append(f"coalesce(sum(c_{suffix}){pick}, 0) AS {name}")
            outer.append(name)
            features.append(Feature(name, f"number of {_what(scope)} {window_doc(suffix)}"))
        for w in settings.windows:
            picked.append(f"coalesce(sum(p_{w}d){pick}, 0) AS {scope}_count_prev_{w}d")
            name = f"{scope}_count_change_{w}d"
            outer.append(f"ln((1 + {scope}_count_{w}d) / (1 + {scope}_count_prev_{w}d)) AS {name}")
            features.append(Feature(name, f"ln((1 + {_what(scope)} in the last {w} days) / "
                                          f"(1 + those in the {w} days before))"))
        for stat, agg in (("last", "min"), ("first", "max")):
            name = f"{scope}_days_since_{stat}"
            picked.append(f"{agg}({stat}){pick} AS {name}")
            outer.append(name)
            features.append(Feature(name, f"days from the {stat} of the client's {_what(scope)} to the cutoff "
                                          f"(none: the recency cap)", CAP))
    inner = f"SELECT client_id, type, {', '.join(per_type)} FROM events GROUP BY client_id, type"
    query = (f"SELECT client_id, {', '.join(outer)} FROM "
             f"(SELECT client_id, {', '.join(picked)} FROM ({inner}) GROUP BY client_id)")
    return Block(query, features)


def _distinct_block(settings: FeaturesConfig, key: str, key_sql: str, scopes: tuple[str, ...], word,
                    table: str = "events") -> Block:
    """Distinct values of a key per window: a value is in a window when its most recent event is."""
    per_scope = [f"count(*) FILTER (WHERE {in_window}) AS c_{suffix}" for suffix, in_window in window_suffixes(settings)]
    exprs, features = [], []
    for scope in scopes:
        for suffix, _ in window_suffixes(settings):
            name = f"{scope}_distinct_{key}_{suffix}"
            exprs.append(f"sum(c_{suffix}) FILTER (WHERE scope = '{scope}') AS {name}")
            features.append(Feature(name, f"number of distinct {word(scope)} among {_what(scope)} {window_doc(suffix)}"))
    latest = (f"SELECT client_id, {{scope}} AS scope, {key_sql} AS key, min(age) AS age FROM {table} "
              f"WHERE {key_sql} IS NOT NULL GROUP BY ALL")
    source = latest.format(scope="type::VARCHAR")
    if "any" in scopes:
        source += " UNION ALL " + latest.format(scope="'any'")
    counted = f"SELECT client_id, scope, {', '.join(per_scope)} FROM ({source}) GROUP BY client_id, scope"
    return Block(f"SELECT client_id, {', '.join(exprs)} FROM ({counted}) GROUP BY client_id", features)


def _gaps_block() -> Block:
    """Statistics of the time between consecutive events of a type (and of any type), all history."""
    exprs, features = [], []
    for scope in SCOPES:
        for stat, agg, default in (("mean", "avg", CAP), ("std", "stddev_pop", 0.0), ("min", "min", CAP),
                                   ("max", "max", CAP)):
            name = f"{scope}_gap_{stat}"
            exprs.append(f"{agg}(gap) FILTER (WHERE scope = '{scope}') AS {name}")
            features.append(Feature(name, f"{stat} of the days between consecutive {_what(scope)} "
                                          f"(fewer than 2 events: {'the recency cap' if default == CAP else '0'})",
                                    default))
    gaps = ("SELECT client_id, type::VARCHAR AS scope, "
            "date_diff('second', lag(ts) OVER (PARTITION BY client_id, type ORDER BY ts), ts) / 86400.0 AS gap "
            "FROM events UNION ALL SELECT client_id, 'any' AS scope, "
            "date_diff('second', lag(ts) OVER (PARTITION BY client_id ORDER BY ts), ts) / 86400.0 AS gap FROM events")
    return Block(f"SELECT client_id, {', '.join(exprs)} FROM ({gaps}) WHERE gap IS NOT NULL GROUP BY client_id",
                 features)


def activity(settings: FeaturesConfig) -> Family:
    days = "CAST(ts AS DATE)"
    return Family("activity", "Activity per event type and window: counts, distinct values, active days, "
                              "change, recency, gaps", [
        _counts_block(settings),
        _distinct_block(settings, "items", "item", TYPES, lambda s: ITEM_WORD[s], "items"),
        _distinct_block(settings, "categories", "category", PRODUCT_TYPES, lambda s: "categories", "items"),
        _distinct_block(settings, "days", days, SCOPES, lambda s: "calendar days"),
        _gaps_block(),
    ])


def sessions(settings: FeaturesConfig) -> Family:
    """A new session starts when the gap to the client's previous event (any type) exceeds the threshold."""
    gap_s = int(round(float(settings.session_gap_minutes) * 60))
    marked = ("SELECT client_id, ts, age, type, CASE WHEN prev IS NULL OR date_diff('second', prev, ts) > "
              f"{gap_s} THEN 1 ELSE 0 END AS new FROM (SELECT client_id, ts, age, type, "
              "lag(ts) OVER (PARTITION BY client_id ORDER BY ts) AS prev FROM events)")
    # default RANGE frame: events tied on ts get the same session number, whatever their order
    numbered = f"SELECT *, sum(new) OVER (PARTITION BY client_id ORDER BY ts) AS session FROM ({marked})"
    per_session = ("SELECT client_id, session, min(ts) AS start, max(ts) AS stop, max(age) AS start_age, "
                   "count(*) AS size, bool_or(type = 'buy') AS has_buy, bool_or(type = 'add') AS has_add, "
                   f"date_diff('second', min(ts), max(ts)) / 60.0 AS minutes FROM ({numbered}) GROUP BY ALL")
    with_gap = ("SELECT *, date_diff('second', lag(stop) OVER (PARTITION BY client_id ORDER BY start), start) "
                f"/ 86400.0 AS gap FROM ({per_session})")
    exprs, features = [], []
    for suffix, in_window in window_suffixes(settings):
        exprs.append(f"count(*) FILTER (WHERE {in_window.replace('age', 'start_age')}) AS session_count_{suffix}")
        features.append(Feature(f"session_count_{suffix}", f"number of sessions starting {window_doc(suffix)}"))
    for column, unit in (("minutes", "duration in minutes (first to last event)"), ("size", "number of events")):
        for stat, agg in (("mean", "avg"), ("std", "stddev_pop"), ("max", "max")):
            name = f"session_{'duration' if column == 'minutes' else 'size'}_{stat}"
            exprs.append(f"{agg}({column}) AS {name}")
            features.append(Feature(name, f"{stat} over the client's sessions of the session {unit}"))
    for stat, agg, default in (("mean", "avg", CAP), ("std", "stddev_pop", 0.0), ("min", "min", CAP),
                               ("max", "max", CAP)):
        name = f"session_gap_{stat}"
        exprs.append(f"{agg}(gap) AS {name}")
        features.append(Feature(name, f"{stat} of the days from a session's last event to the next session's first "
                                      f"(one session: {'the recency cap' if default == CAP else '0'})", default))
    for name, condition, doc in (
            ("session_buy_share", "has_buy", "share of sessions with a purchase"),
            ("session_cart_share", "has_add", "share of sessions with an add-to-cart"),
            ("session_single_share", "size = 1", "share of sessions with a single event (bounces)")):
        exprs.append(f"{ratio(f'count(*) FILTER (WHERE {condition})', 'count(*)')} AS {name}")
        features.append(Feature(name, doc))
    exprs.append(f"{ratio('count(*)', 'count(DISTINCT CAST(start AS DATE))')} AS session_per_active_day")
    features.append(Feature("session_per_active_day", "sessions per calendar day on which a session started"))
    query = f"SELECT client_id, {', '.join(exprs)} FROM ({with_gap}) GROUP BY client_id"
    return Family("sessions", f"Sessions ({settings.session_gap_minutes:g}-minute inactivity gap, all event types)",
                  [Block(query, features)])


def cycles(settings: FeaturesConfig) -> Family:
    """Hour-of-day and weekday as points on a circle, averaged, and part-of-day shares."""
    hour = "(hour(ts) + minute(ts) / 60.0 + second(ts) / 3600.0)"
    weekday = "(isodow(ts) - 1)"  # Monday = 0
    exprs, features = [], []
    for scope in ("any", "buy"):
        cond = _is(scope)
        for name, angle, doc in (("hour", f"2 * pi() * {hour} / 24", "hour of day (fractional) / 24"),
                                 ("weekday", f"2 * pi() * {weekday} / 7", "weekday (Monday 0) / 7")):
            for fn in ("sin", "cos"):
                col = f"{scope}_{name}_{fn}"
                exprs.append(f"coalesce(avg({fn}({angle})) FILTER (WHERE {cond}), 0) AS {col}")
                features.append(Feature(col, f"mean of {fn}(2π · {doc}) over the client's {_what(scope)} (none: 0)"))
    parts = (("night", 0, 6), ("morning", 6, 12), ("afternoon", 12, 18), ("evening", 18, 24))
    for part, lo, hi in parts:
        col = f"any_{part}_share"
        exprs.append(f"{ratio(f'count(*) FILTER (WHERE hour(ts) >= {lo} AND hour(ts) < {hi})', 'count(*)')} AS {col}")
        features.append(Feature(col, f"share of the client's events with hour in [{lo}, {hi})"))
    exprs.append(f"{ratio('count(*) FILTER (WHERE isodow(ts) >= 6)', 'count(*)')} AS any_weekend_share")
    features.append(Feature("any_weekend_share", "share of the client's events on Saturday or Sunday"))
    query = f"SELECT client_id, {', '.join(exprs)} FROM events GROUP BY client_id"
    return Family("cycles", "Daily and weekly cycles", [Block(query, features)])
