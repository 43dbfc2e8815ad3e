"""Stage `generate`: a synthetic dataset in the exact raw layout of the RecSys Challenge 2025.

Clients (see synthetic_clients) have sessions drawn day by day from a heavy-tailed rate shaped
by arrival, churn decay and a weekly cycle, at client-shifted hours of a daily cycle. A session
is a burst of page views (generic, category listing and product pages, seconds to minutes
apart) and searches, all around a focus category (or a staple SKU to re-buy). Product views
lead to cart adds; adds to a checkout at the session's end or to removals. The oracle/ folder
holds each relevant client's latent state at the split point SPEC §3 derives from the buys.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from ubp import schema as S
from ubp.data.synthetic_catalog import build_catalog, codes_near, format_vectors
from ubp.data.synthetic_clients import (
    STAPLE_BUY_P,
    alive,
    build_clients,
    oracle_state,
    sample_categories,
    sample_skus,
)
from ubp.io import UbpError, atomic_dir, save_json, save_npy, save_text
from ubp.params import load_params, section

log = logging.getLogger("ubp.generate")

DEFAULTS = {
    "seed": 2025,
    "n_relevant": 12_000,
    "n_other": 100_000,  # non-relevant clients (each gets at least one session)
    "n_skus": 24_000,
    "n_categories": 600,
    "n_topics": 24,
    "n_urls": 50_000,  # generic pages; every SKU and category also has its own page
    "start_date": "2022-06-23",
    "days": 140,
    "relevant_rate": 0.16,  # median sessions per day of an active relevant client
    "other_rate": 0.05,
    "topic_concentration": 2.4,  # Dirichlet total: lower = clients focus on fewer topics
    "category_zipf": 1.1,
    "sku_zipf": 1.5,
    "new_sku_share": 0.15,  # SKUs launched during the period
    "new_sku_hype": 2.5,  # their popularity multiplier at launch (decays)
    "new_sku_wave": 0.3,  # share of new SKUs launched around the split (see build_catalog)
}
TINY = {"n_relevant": 600, "n_other": 2_400, "n_skus": 4_000, "n_categories": 120, "n_urls": 3_000, "relevant_rate": 0.2}

DAY = 86_400
ORACLE_CATEGORIES = 160
ORACLE_SKUS = 192
ORACLE_NEW_SKUS = 128
TARGET_WINDOW_DAYS = 14  # SPEC §3: each target window is 14 days
WEEKDAY = np.array([1.0, 0.95, 0.95, 0.97, 1.0, 1.08, 1.15])  # Monday..Sunday
HOURLY = np.array([3, 2, 1.2, 0.8, 0.6, 0.7, 1.2, 2.2, 3.5, 4.5, 5, 5.2, 5.5, 5.3, 5.2, 5.3, 5.6, 6, 6.6, 7.4, 8, 7.6, 6.2, 4.5])
FOCUS_SHARE = 0.75  # product views and searches that stay on the session's focus category
ODD_SECONDS = 0.03  # timestamps that are not multiples of 5 s


def _gaps(rng: np.random.Generator, n: int, median_s: float, sigma: float) -> np.ndarray:
    """Heavy-tailed gaps in whole 5-second steps (the real clock mostly ticks in 5 s)."""
    return 5 * np.maximum(1, np.rint(rng.lognormal(np.log(median_s / 5), sigma, n))).astype(np.int64)


def day_weights(cfg) -> np.ndarray:
    """Weekday multiplier of the session rate on each day of the period."""
    first_weekday = np.datetime64(cfg["start_date"], "D").astype("datetime64[D]").item().weekday()
    return WEEKDAY[(first_weekday + np.arange(cfg["days"])) % 7]


def sample_sessions(rng, cfg, cl) -> tuple[np.ndarray, np.ndarray]:
    """(client index, start second) of every session, sorted by client then time."""
    days, n = cfg["days"], len(cl.ids)
    week = day_weights(cfg)
    clients, day_of = [], []
    for lo in range(0, n, 20_000):
        c = np.arange(lo, min(n, lo + 20_000))
        lam = cl.rate[c, None] * alive(cl, c[:, None], np.arange(days)[None, :] + 0.5) * week
        counts = rng.poisson(lam)
        # Every non-relevant client exists because it did something: at least its arrival session.
        empty = (counts.sum(1) == 0) & (c >= cl.n_relevant)
        counts[empty, np.floor(cl.arrival[c[empty]]).astype(int)] = 1
        rows, cols = np.nonzero(counts)
        clients.append(np.repeat(c[rows], counts[rows, cols]))
        day_of.append(np.repeat(cols, counts[rows, cols]))
    client, day = np.concatenate(clients), np.concatenate(day_of)
    hour = (rng.choice(24, len(client), p=HOURLY / HOURLY.sum()) + np.rint(cl.hour_shift[client])).astype(int) % 24
    start = day * DAY + hour * 3600 + rng.integers(0, 720, len(client)) * 5
    order = np.lexsort((start, client))
    return client[order], start[order]


def _segment_cumsum(values: np.ndarray, seg_start: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each segment (rows of a segment are contiguous)."""
    cum = np.cumsum(values)
    return cum - np.repeat(cum[seg_start] - values[seg_start], np.diff(np.append(seg_start, len(values))))


def sample_events(rng, cfg, cat, cl, sess_client, sess_start) -> dict[str, dict[str, np.ndarray]]:
    """All events as {event type: {'client', 't', value column}}, value as catalogue index/codes."""
    n_sess = len(sess_client)
    t_sess = sess_start / DAY
    staple_sess = rng.random(n_sess) < cl.staple_share[sess_client]
    staple = cl.staples[sess_client, rng.integers(0, cl.staples.shape[1], n_sess)]
    focus = np.where(staple_sess, cat.sku_cat[staple], sample_categories(rng, cl, cat, sess_client, t_sess))

    n_views = 1 + rng.poisson(rng.gamma(2.0, np.maximum(cl.depth[sess_client] - 1, 0.2) / 2))
    n_search = rng.poisson(cl.search_rate[sess_client])
    steps = n_views + n_search
    sess = np.repeat(np.arange(n_sess), steps)
    pos = np.arange(len(sess)) - np.repeat(np.cumsum(steps) - steps, steps)
    is_search = pos < n_search[sess]
    # Searches tend to open a session but may come anywhere; views fill the rest.
    key = np.where(is_search, rng.uniform(0, 0.6, len(sess)), rng.random(len(sess)))
    order = np.lexsort((key, sess))
    is_search = is_search[order]
    first = np.cumsum(steps) - steps
    gaps = _gaps(rng, len(sess), 40, 0.9)
    gaps[first] = 0
    t = sess_start[sess] + _segment_cumsum(gaps, first)
    client = sess_client[sess]
    session_end = t[np.cumsum(steps) - 1]

    def category_for(rows):
        own = rng.random(len(rows)) < FOCUS_SHARE
        fresh = sample_categories(rng, cl, cat, client[rows], t[rows] / DAY)
        return np.where(own, focus[sess[rows]], fresh)

    # Searches: codes near the category's text centre, sometimes only near its topic (broad query).
    srch = np.flatnonzero(is_search)
    s_cat = category_for(srch)
    broad = rng.random(len(srch)) < 0.25
    centre = np.where(broad[:, None], cat.topic_centroid[cat.cat_topic[s_cat]], cat.cat_centroid[s_cat])
    query = codes_near(rng, centre, 30.0)

    # Page views: product pages (the SKU's url), category listings, generic pages.
    views = np.flatnonzero(~is_search)
    u = rng.random(len(views))
    ps = cl.product_share[client[views]]
    prod = views[u < ps]
    listing = views[(u >= ps) & (u < ps + (1 - ps) * 0.4)]
    generic = views[u >= ps + (1 - ps) * 0.4]
    on_staple = staple_sess[sess[prod]] & (rng.random(len(prod)) < 0.6)
    p_cat = category_for(prod)
    p_sku = np.where(on_staple, staple[sess[prod]], sample_skus(rng, cl, cat, client[prod], p_cat, t[prod] / DAY))
    generic_page = np.searchsorted(cat.generic_cum, rng.random(len(generic)), side="right")
    l_cat = category_for(listing)

    # Funnel: add after viewing; buy at checkout after the session's last page; else maybe remove.
    pc_ = client[prod]
    add_p = np.where(on_staple, np.minimum(0.9, 3.5 * cl.add_p[pc_]), cl.add_p[pc_])
    added = rng.random(len(prod)) < add_p
    a_rows, a_sku, a_client = prod[added], p_sku[added], pc_[added]
    a_t = t[a_rows] + 5 * rng.integers(1, 7, len(a_rows))
    buy_p = np.where(on_staple[added], np.maximum(cl.buy_p[a_client], STAPLE_BUY_P * cl.buyer[a_client]), cl.buy_p[a_client])
    bought = rng.random(len(a_rows)) < buy_p
    checkout = session_end + 60 + _gaps(rng, n_sess, 90, 0.8)
    b_t = checkout[sess[a_rows[bought]]] + 5 * rng.integers(0, 2, bought.sum())
    removed = ~bought & (rng.random(len(a_rows)) < cl.remove_p[a_client])
    r_t = a_t[removed] + _gaps(rng, removed.sum(), 150, 1.2)
    dup = rng.random(bought.sum()) < 0.02  # the real files repeat some purchase rows
    b_client, b_sku = np.append(a_client[bought], a_client[bought][dup]), np.append(a_sku[bought], a_sku[bought][dup])
    b_t = np.append(b_t, b_t[dup])
    paid = np.unique(sess[a_rows[bought]])  # a checkout page view just before each purchase
    c_t = checkout[paid] - 5 * rng.integers(1, 12, len(paid))

    pv_client = np.concatenate([client[prod], client[listing], client[generic], sess_client[paid]])
    pv_t = np.concatenate([t[prod], t[listing], t[generic], c_t])
    pv_url = np.concatenate(
        [cat.product_url[p_sku], cat.listing_url[l_cat], cat.generic_url[generic_page], np.full(len(paid), cat.generic_url[0])]
    )
    return {
        S.PAGE_VISIT: {"client": pv_client, "t": pv_t, S.URL: pv_url},
        S.SEARCH_QUERY: {"client": client[srch], "t": t[srch], S.QUERY: query},
        S.ADD_TO_CART: {"client": a_client, "t": a_t, S.SKU: a_sku},
        S.REMOVE_FROM_CART: {"client": a_client[removed], "t": r_t, S.SKU: a_sku[removed]},
        S.PRODUCT_BUY: {"client": b_client, "t": b_t, S.SKU: b_sku},
    }


def _top(counts: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Indices of the k largest positive counts (ties: lower index first)."""
    if allowed is not None:
        counts = np.where(allowed, counts, 0)
    order = np.lexsort((np.arange(len(counts)), -counts))[:k]
    return order[counts[order] > 0]


def oracle_columns(cfg, cat, events, t_split: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which categories/SKUs the oracle describes: the most bought in the target windows (by all
    clients), so that the label sets of the propensity tasks are covered; and which of the SKUs
    had no product event before the split (the new-SKU task's pool)."""
    buys = events[S.PRODUCT_BUY]
    target = buys["t"] >= t_split
    n_sku, n_cat = len(cat.sku_id), len(cat.cat_id)
    sku_counts = np.bincount(buys[S.SKU][target], minlength=n_sku)
    cat_counts = np.bincount(cat.sku_cat[buys[S.SKU][target]], minlength=n_cat)
    # The open tasks' label sets are the train window's top sellers: include them even where the two
    # windows together rank them lower (twice as many, as ties at the 100th place break by id there).
    first = target & (buys["t"] < t_split + TARGET_WINDOW_DAYS * DAY)
    first_skus = np.bincount(buys[S.SKU][first], minlength=n_sku)
    first_cats = np.bincount(cat.sku_cat[buys[S.SKU][first]], minlength=n_cat)
    cat_cols = np.unique(np.concatenate([_top(cat_counts, ORACLE_CATEGORIES), _top(first_cats, 2 * S.N_TARGET_LABELS)]))
    seen = np.zeros(n_sku, bool)
    for name in S.PRODUCT_EVENTS:
        ev = events[name]
        seen[ev[S.SKU][ev["t"] < t_split]] = True
    skus = np.concatenate([_top(sku_counts, ORACLE_SKUS), _top(first_skus, 2 * S.N_TARGET_LABELS),
                           _top(sku_counts, ORACLE_NEW_SKUS, ~seen)])
    skus = np.unique(skus)
    return np.sort(cat_cols), skus, ~seen[skus]


def _write_table(rng, path: Path, columns: dict) -> None:
    n = len(next(iter(columns.values())))
    perm = rng.permutation(n)  # rows in random order, like the real files
    table = pa.table({name: (col.take(pa.array(perm)) if isinstance(col, pa.Array) else col[perm]) for name, col in columns.items()})
    pq.write_table(table, path, compression="snappy")


def _timestamps(rng, t: np.ndarray, start: np.datetime64) -> pa.Array:
    odd = rng.random(len(t)) < ODD_SECONDS
    t = t + np.where(odd, rng.integers(1, 5, len(t)), 0)
    epoch = start.astype("datetime64[s]").astype(np.int64)
    return pc.strftime(pa.array(t + epoch, type=pa.timestamp("s")), format="%Y-%m-%d %H:%M:%S")


def generate(out_dir: Path, cfg: dict) -> None:
    """Write a raw-layout dataset plus oracle/ into `out_dir` (atomically, whole directory)."""
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise UbpError(f"params.yaml data.synthetic: unknown keys {sorted(unknown)} (known: {', '.join(DEFAULTS)})")
    cfg = {**DEFAULTS, **cfg}
    rng = np.random.default_rng(cfg["seed"])
    start = np.datetime64(cfg["start_date"], "D")
    bar = tqdm(total=6, desc="generate", unit="step", disable=None)

    def step(msg):
        log.info(msg)
        bar.set_postfix_str(msg.split(":")[0])
        bar.update(1)

    cat = build_catalog(rng, cfg)
    cl = build_clients(rng, cfg, cat)
    step(f"catalogue: {len(cat.sku_id)} SKUs, {len(cat.cat_id)} categories; {len(cl.ids)} clients")
    sess_client, sess_start = sample_sessions(rng, cfg, cl)
    step(f"sessions: {len(sess_client)}")
    events = sample_events(rng, cfg, cat, cl, sess_client, sess_start)
    horizon = cfg["days"] * DAY
    for ev in events.values():
        keep = ev["t"] < horizon
        for key in ev:
            ev[key] = ev[key][keep]
    if len(events[S.PRODUCT_BUY]["t"]) == 0:
        raise UbpError("synthetic data has no purchases: raise n_relevant or relevant_rate")
    step("events: " + ", ".join(f"{k} {len(v['t'])}" for k, v in events.items()))

    end = int(events[S.PRODUCT_BUY]["t"].max())
    t_split = (end - S.TARGET_OFFSET_DAYS * DAY) // DAY * DAY
    cat_cols, sku_cols, unseen = oracle_columns(cfg, cat, events, t_split)
    state, columns = oracle_state(cl, cat, t_split / DAY, cat_cols, sku_cols, day_weights(cfg), unseen)
    step(f"oracle: {state.shape[1]} columns at {start + np.timedelta64(t_split, 's')}")

    with atomic_dir(out_dir) as tmp:
        for name, ev in events.items():
            value_col = S.EVENT_VALUE_COLUMN[name]
            value = ev[value_col]
            if name == S.SEARCH_QUERY:
                value = format_vectors(rng, value)
            elif name != S.PAGE_VISIT:
                value = cat.sku_id[value]
            cols = {S.CLIENT_ID: cl.ids[ev["client"]], S.TIMESTAMP: _timestamps(rng, ev["t"], start), value_col: value}
            _write_table(rng, tmp / f"{name}.parquet", cols)
        props = {S.SKU: cat.sku_id, S.CATEGORY: cat.cat_id[cat.sku_cat], S.PRICE: cat.sku_price, S.NAME: format_vectors(rng, cat.sku_name)}
        _write_table(rng, tmp / f"{S.PROPERTIES}.parquet", props)
        relevant = cl.ids[: cl.n_relevant]
        save_npy(tmp / S.RELEVANT_CLIENTS_FILE, relevant[rng.permutation(len(relevant))])
        save_npy(tmp / S.ORACLE_SUBDIR / "client_ids.npy", relevant)
        save_npy(tmp / S.ORACLE_SUBDIR / "state.npy", state)
        save_json(tmp / S.ORACLE_SUBDIR / "columns.json", columns)
        step(f"written: {out_dir}")
    bar.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ubp generate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=S.SYNTHETIC_DIR, help="output directory (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="use the TINY preset (tests, quick looks)")
    args = parser.parse_args(argv)
    data = section(load_params(), "data")
    source = data.get("source", "synthetic")
    if source == "dir":
        with atomic_dir(args.out) as tmp:
            save_text(
                tmp / "SKIPPED.txt",
                f"data.source is 'dir': the pipeline reads the user's data from {data.get('raw_dir')!r};\n"
                "no synthetic data was generated.\n",
            )
        log.info("data.source is 'dir' (%s): wrote only %s/SKIPPED.txt", data.get("raw_dir"), args.out)
        return 0
    if source != "synthetic":
        raise UbpError(f"params.yaml data.source: expected 'synthetic' or 'dir', got {source!r}")
    cfg = dict(data.get("synthetic") or {})
    if args.tiny:
        cfg = {**cfg, **TINY}
    t0 = time.perf_counter()
    generate(args.out, cfg)
    log.info("generated %s in %.1f s", args.out, time.perf_counter() - t0)
    return 0
