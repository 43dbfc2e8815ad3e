"""Latent client model of the synthetic shop: traits and the choice samplers (oracle: synthetic_oracle).

A client has topic preferences that drift (a mixture of two Dirichlet draws whose weight grows
over time), a few favourite categories and staple SKUs it returns to, a price level and width,
a taste for new SKUs, a heavy-tailed session rate, a lifetime after which activity decays,
and funnel rates (views per session, share of product pages, searches, cart adds, conversion).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass, fields, replace

import numpy as np

from ubp.data.synthetic_catalog import CLIENT_ID_HIGH, Catalog, find_sorted, sample_in_groups, unique_ids

if TYPE_CHECKING:  # the generator's settings (ubp.data.synthetic imports this module)
    from ubp.data.synthetic import SyntheticConfig

N_FAVOURITES = 4  # favourite categories per client
N_STAPLES = 4  # SKUs a client re-buys
N_CANDIDATES = 3  # SKUs drawn from a category's popularity, then chosen by the client's taste
NEW_SKU_DAYS = 30  # a SKU counts as "new" for novelty seekers this long after launch
HYPE_DAYS = 45.0  # a new SKU's extra popularity decays with this time constant
STAPLE_BUY_P = 0.7  # a re-buy converts at least this often (buyers only)


@dataclass
class Clients:
    ids: np.ndarray  # (N,) int64; the first n_relevant are the relevant clients
    n_relevant: int
    theta0_cum: np.ndarray  # (N*K,) row-offset cumulative topic weights at day 0
    theta1_cum: np.ndarray  # (N*K,) same for the topic weights the client drifts towards
    theta0: np.ndarray
    theta1: np.ndarray
    drift_rate: np.ndarray  # per day: drift weight w(t) = 1 - exp(-drift_rate * t)
    fav_cat: np.ndarray  # (N, F) category indices
    fav_w: np.ndarray  # (N, F)
    fav_cum: np.ndarray  # (N*F,)
    loyalty: np.ndarray  # share of (non-exploring) sessions that go to a favourite category
    explore: np.ndarray  # share of sessions that follow shop-wide popularity, not the client's taste
    staples: np.ndarray  # (N, S) SKU indices
    staple_share: np.ndarray  # share of sessions that re-buy a staple
    price_level: np.ndarray  # preferred price quantile
    price_width: np.ndarray
    novelty: np.ndarray  # log-weight bonus for recently launched SKUs
    buyer: np.ndarray  # bool: ever converts
    rate: np.ndarray  # sessions per day while active
    arrival: np.ndarray  # day of first possible activity
    lifetime: np.ndarray  # mean days from arrival to churn
    churn_at: np.ndarray  # day activity starts to decay
    decay_days: np.ndarray  # time constant of that decay
    depth: np.ndarray  # mean page views per session
    product_share: np.ndarray  # share of page views that are product pages
    search_rate: np.ndarray  # searches per session
    add_p: np.ndarray  # P(add to cart | product view)
    buy_p: np.ndarray  # P(buy | added)
    remove_p: np.ndarray  # P(remove | added, not bought)
    hour_shift: np.ndarray  # hours added to the shop-wide daily cycle

    def take(self, idx: np.ndarray) -> "Clients":
        """The clients at sorted indices `idx` (relevant ones first), as their own population."""
        cum = {"theta0_cum": "theta0", "theta1_cum": "theta1", "fav_cum": "fav_w"}
        sliced = {f.name: getattr(self, f.name)[idx] for f in fields(self) if f.name not in (*cum, "n_relevant")}
        sliced.update({name: row_cumsum(sliced[source]) for name, source in cum.items()})
        return replace(self, n_relevant=int(np.count_nonzero(idx < self.n_relevant)), **sliced)


def row_cumsum(weights: np.ndarray) -> np.ndarray:
    """Flattened per-row cumulative weights offset by the row index (see pick_in_rows)."""
    cum = np.cumsum(weights, axis=1)
    cum = cum / cum[:, -1:]
    return (cum + np.arange(len(weights))[:, None]).ravel()


def pick_in_rows(cum: np.ndarray, rows: np.ndarray, u: np.ndarray, width: int) -> np.ndarray:
    """Column drawn from each given row's weights, all rows in one searchsorted call."""
    idx = find_sorted(cum, rows + u) - rows * width
    return np.clip(idx, 0, width - 1)


def _by_group(relevant: np.ndarray, rel_value, other_value):
    return np.where(relevant, rel_value, other_value)


def _active_days(rng: np.random.Generator, cfg: SyntheticConfig, rel: np.ndarray, lifetime: np.ndarray) -> np.ndarray:
    """Days from arrival to churn: exponential around each client's lifetime, or for relevant
    clients with relevant_churn_shape k != 1 a Gamma(k) (k > 1: less spread, fewer one-day clients)."""
    k = cfg.relevant_churn_shape
    if k == 1:
        return rng.exponential(lifetime)
    return np.where(rel, rng.gamma(k, 1.0 / k, len(lifetime)), rng.exponential(1.0, len(lifetime))) * lifetime


def build_clients(rng: np.random.Generator, cfg: SyntheticConfig, cat: Catalog, ids: np.ndarray | None = None) -> Clients:
    """cfg's n_relevant + n_other clients (relevant first) with traits drawn from cfg's shape keys;
    `ids` are their client ids (default: drawn here)."""
    n_rel, n = cfg.n_relevant, cfg.n_relevant + cfg.n_other
    days, k = cfg.days, len(cat.topic_weight)
    rel = np.arange(n) < n_rel

    alpha = cfg.topic_concentration * cat.topic_weight
    theta0 = 0.98 * rng.dirichlet(alpha, n) + 0.02 * cat.topic_weight
    theta1 = 0.4 * theta0 + 0.6 * (0.98 * rng.dirichlet(alpha, n) + 0.02 * cat.topic_weight)
    theta0_cum = row_cumsum(theta0)

    rows = np.repeat(np.arange(n), N_FAVOURITES)
    fav_topic = pick_in_rows(theta0_cum, rows, rng.random(len(rows)), k)
    fav_cat = sample_in_groups(cat.topic_cat_cum, fav_topic, rng.random(len(rows)), cat.topic_start)
    fav_w = rng.dirichlet(np.full(N_FAVOURITES, 0.8), n)

    buyer = rng.random(n) < _by_group(rel, cfg.relevant_buyers, cfg.other_buyers)
    arrival = _by_group(rel, np.where(rng.random(n) < cfg.relevant_start_share, 0.0, rng.uniform(0, days, n)), rng.uniform(0, days - 1, n))
    lifetime = rng.lognormal(np.log(_by_group(rel, cfg.relevant_lifetime, cfg.other_lifetime)), _by_group(rel, cfg.relevant_lifetime_sigma, 1.0))
    clients = Clients(
        ids=unique_ids(rng, n, CLIENT_ID_HIGH) if ids is None else ids,
        n_relevant=n_rel,
        theta0_cum=theta0_cum,
        theta1_cum=row_cumsum(theta1),
        theta0=theta0,
        theta1=theta1,
        drift_rate=rng.lognormal(np.log(1 / 250), 0.8, n),
        fav_cat=fav_cat.reshape(n, N_FAVOURITES),
        fav_w=fav_w,
        fav_cum=row_cumsum(fav_w),
        loyalty=rng.beta(2.0, 3.0, n),
        explore=rng.beta(2.0, 6.0, n),
        staples=np.zeros((n, N_STAPLES), dtype=np.int64),
        staple_share=np.where(buyer, rng.beta(1.2, 6.0, n), 0.0),
        price_level=rng.beta(2.0, 2.0, n),
        price_width=rng.uniform(0.12, 0.35, n),
        novelty=rng.normal(0.0, 1.0, n),
        buyer=buyer,
        rate=rng.lognormal(np.log(_by_group(rel, cfg.relevant_rate, cfg.other_rate)), _by_group(rel, cfg.relevant_rate_sigma, cfg.other_rate_sigma)),
        arrival=arrival,
        lifetime=lifetime,
        churn_at=arrival + _active_days(rng, cfg, rel, lifetime),
        decay_days=rng.lognormal(np.log(cfg.decay_days), 1.0, n),
        depth=rng.lognormal(np.log(_by_group(rel, cfg.relevant_depth, cfg.other_depth)), 0.4),
        product_share=rng.beta(5.0, 4.0, n),
        search_rate=rng.gamma(1.0, _by_group(rel, cfg.relevant_searches, cfg.other_searches)),
        add_p=np.where(buyer, rng.beta(2.0, _by_group(rel, cfg.relevant_add_b, cfg.other_add_b)), rng.beta(1.0, cfg.browser_add_b, n)),
        buy_p=np.where(buyer, rng.beta(2.5, cfg.buy_b, n), 0.0),
        remove_p=rng.beta(6.0, cfg.remove_b, n),
        hour_shift=rng.normal(0.0, 2.5, n),
    )
    rows = np.repeat(np.arange(n), N_STAPLES)
    staple_cat = clients.fav_cat[rows, np.arange(len(rows)) % N_FAVOURITES]
    clients.staples = sample_skus(rng, clients, cat, rows, staple_cat, np.zeros(len(rows))).reshape(n, N_STAPLES)
    return clients


def drift_weight(cl: Clients, client: np.ndarray, t: np.ndarray) -> np.ndarray:
    return 1.0 - np.exp(-cl.drift_rate[client] * t)


def alive(cl: Clients, client: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Activity multiplier at day t: 0 before arrival, 1 until churn, then exponential decay."""
    after = np.maximum(t - cl.churn_at[client], 0.0)
    return np.where(t < cl.arrival[client], 0.0, np.exp(-after / cl.decay_days[client]))


def sample_categories(rng: np.random.Generator, cl: Clients, cat: Catalog, client: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A category per (client, day): shop-wide popularity with P = explore; else a favourite with
    P = loyalty, else topic (drifted) -> category."""
    n, k = len(client), len(cat.topic_weight)
    fav = pick_in_rows(cl.fav_cum, client, rng.random(n), N_FAVOURITES)
    drifted = rng.random(n) < drift_weight(cl, client, t)
    topic = np.where(
        drifted,
        pick_in_rows(cl.theta1_cum, client, rng.random(n), k),
        pick_in_rows(cl.theta0_cum, client, rng.random(n), k),
    )
    by_topic = sample_in_groups(cat.topic_cat_cum, topic, rng.random(n), cat.topic_start)
    own = np.where(rng.random(n) < cl.loyalty[client], cl.fav_cat[client, fav], by_topic)
    shop_wide = np.searchsorted(cat.cat_global_cum, rng.random(n), side="right")
    return np.where(rng.random(n) < cl.explore[client], np.minimum(shop_wide, len(cat.cat_topic) - 1), own)


def _taste(cl: Clients, cat: Catalog, client: np.ndarray, sku: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Log-weight of a SKU for a client at day t beyond its popularity: price fit, novelty, hype decay."""
    price = -((cat.sku_price_q[sku] - cl.price_level[client]) ** 2) / (2 * cl.price_width[client] ** 2)
    age = t - cat.sku_launch[sku]
    new = cat.sku_launch[sku] > 0
    fresh = new & (age >= 0) & (age < NEW_SKU_DAYS)
    return price + np.where(fresh, cl.novelty[client], 0.0) - np.where(new, np.maximum(age, 0.0) / HYPE_DAYS, 0.0)


def sample_skus(
    rng: np.random.Generator, cl: Clients, cat: Catalog, client: np.ndarray, category: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """A SKU of `category` per row: candidates by popularity, the client's taste picks (Gumbel-max).

    SKUs not launched by day t are excluded; if no candidate is on sale, the category's anchor."""
    n, m = len(client), N_CANDIDATES
    cand = sample_in_groups(cat.cat_cum, np.repeat(category, m), rng.random(n * m), cat.cat_start).reshape(n, m)
    cc, tt = client[:, None], t[:, None]
    score = _taste(cl, cat, cc, cand, tt) + rng.gumbel(size=(n, m))
    score = np.where(cat.sku_launch[cand] <= tt, score, -np.inf)
    best = cand[np.arange(n), np.argmax(score, axis=1)]
    return np.where(np.isfinite(score.max(axis=1)), best, cat.cat_anchor[category])
