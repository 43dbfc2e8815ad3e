"""Sessions and events of a block of synthetic clients (see synthetic for the whole model).

A client's sessions are drawn day by day from its rate x activity (arrival, churn decay) x a
weekly cycle, at client-shifted hours of a daily cycle. A session is a burst of page views
(generic, category listing and product pages, seconds to minutes apart) and searches around a
focus category (or a staple SKU to re-buy); product views lead to cart adds, adds to a checkout
at the session's end or to removals. Everything here is per client, so a block of clients can be
sampled alone.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ubp import schema as S
from ubp.data.synthetic_catalog import codes_near, find_sorted
from ubp.data.synthetic_clients import STAPLE_BUY_P, alive, sample_categories, sample_skus

if TYPE_CHECKING:  # the generator's settings (ubp.data.synthetic imports this module)
    from ubp.data.synthetic import SyntheticConfig

DAY = 86_400
WEEKDAY = np.array([1.0, 0.95, 0.95, 0.97, 1.0, 1.08, 1.15])  # Monday..Sunday
HOURLY = np.array([3, 2, 1.2, 0.8, 0.6, 0.7, 1.2, 2.2, 3.5, 4.5, 5, 5.2, 5.5, 5.3, 5.2, 5.3, 5.6, 6, 6.6, 7.4, 8, 7.6, 6.2, 4.5])
FOCUS_SHARE = 0.75  # product views and searches that stay on the session's focus category


def _gaps(rng: np.random.Generator, n: int, median_s: float, sigma: float) -> np.ndarray:
    """Heavy-tailed gaps in whole 5-second steps (the real clock mostly ticks in 5 s)."""
    return 5 * np.maximum(1, np.rint(rng.lognormal(np.log(median_s / 5), sigma, n))).astype(np.int64)


def day_weights(cfg: SyntheticConfig) -> np.ndarray:
    """Weekday multiplier of the session rate on each day of the period."""
    first_weekday = np.datetime64(cfg.start_date, "D").astype("datetime64[D]").item().weekday()
    return WEEKDAY[(first_weekday + np.arange(cfg.days)) % 7]


def sample_sessions(rng, cfg: SyntheticConfig, cl) -> tuple[np.ndarray, np.ndarray]:
    """(client index, start second) of every session, sorted by client then time."""
    days, n = cfg.days, len(cl.ids)
    week = day_weights(cfg)
    clients, day_of = [], []
    for lo in range(0, n, 20_000):
        c = np.arange(lo, min(n, lo + 20_000))
        lam = cl.rate[c, None] * alive(cl, c[:, None], np.arange(days)[None, :] + 0.5) * week
        counts = rng.poisson(lam)
        # Every non-relevant client exists because it did something: at least its arrival session
        # (relevant clients too with relevant_arrival_session: the real ones were chosen among the active).
        empty = (counts.sum(1) == 0) & ((c >= cl.n_relevant) | bool(cfg.relevant_arrival_session))
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


def sample_events(rng, cfg: SyntheticConfig, cat, cl, sess_client, sess_start) -> dict[str, dict[str, np.ndarray]]:
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
    generic_page = find_sorted(cat.generic_cum, rng.random(len(generic)))
    l_cat = category_for(listing)

    # Funnel: add after viewing; buy at checkout after the session's last page; else maybe remove.
    pc_ = client[prod]
    add_p = np.where(on_staple, np.minimum(0.9, 3.5 * cl.add_p[pc_]), cl.add_p[pc_])
    added = rng.random(len(prod)) < add_p
    first_buy = _first_buys(cfg, cl, pc_)
    added |= first_buy
    a_rows, a_sku, a_client = prod[added], p_sku[added], pc_[added]
    a_t = t[a_rows] + 5 * rng.integers(1, 7, len(a_rows))
    buy_p = np.where(on_staple[added], np.maximum(cl.buy_p[a_client], STAPLE_BUY_P * cl.buyer[a_client]), cl.buy_p[a_client])
    bought = (rng.random(len(a_rows)) < buy_p) | first_buy[added]
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


def _first_buys(cfg: SyntheticConfig, cl, view_client: np.ndarray) -> np.ndarray:
    """Product views bought whatever the funnel says: with relevant_first_buy, each relevant buyer's
    first product view (the real relevant clients are mostly buyers; this keeps them so without
    raising every session's conversion). Views are in client-then-time order."""
    if not cfg.relevant_first_buy:
        return np.zeros(len(view_client), bool)
    first = np.r_[True, view_client[1:] != view_client[:-1]] if len(view_client) else np.zeros(0, bool)
    return first & (view_client < cl.n_relevant) & cl.buyer[view_client]


def sample_block(rng: np.random.Generator, cfg: SyntheticConfig, cat, cl) -> dict[str, dict[str, np.ndarray]]:
    """Events of the clients `cl` (client = row of cl) inside the period, per event type."""
    sess_client, sess_start = sample_sessions(rng, cfg, cl)
    events = sample_events(rng, cfg, cat, cl, sess_client, sess_start)
    horizon = cfg.days * DAY
    for ev in events.values():
        keep = ev["t"] < horizon
        for key in ev:
            ev[key] = ev[key][keep]
    return events
