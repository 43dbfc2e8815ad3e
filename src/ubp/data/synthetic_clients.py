"""Latent client model of the synthetic shop: traits, the choice samplers, and the oracle state.

A client has topic preferences that drift (a mixture of two Dirichlet draws whose weight grows
over time), a few favourite categories and staple SKUs it returns to, a price level and width,
a taste for new SKUs, a heavy-tailed session rate, a lifetime after which activity decays,
and funnel rates (views per session, share of product pages, searches, cart adds, conversion).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from ubp.data.synthetic_catalog import (
    CLIENT_ID_HIGH,
    N_PRICE_BUCKETS,
    Catalog,
    sample_in_groups,
    topic_category_matrix,
    unique_ids,
)

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
    idx = np.searchsorted(cum, rows + u, side="right") - rows * width
    return np.clip(idx, 0, width - 1)


def _by_group(relevant: np.ndarray, rel_value, other_value):
    return np.where(relevant, rel_value, other_value)


def _active_days(rng: np.random.Generator, cfg: dict, rel: np.ndarray, lifetime: np.ndarray) -> np.ndarray:
    """Days from arrival to churn: exponential around each client's lifetime, or for relevant
    clients with relevant_churn_shape k != 1 a Gamma(k) (k > 1: less spread, fewer one-day clients)."""
    k = cfg["relevant_churn_shape"]
    if k == 1:
        return rng.exponential(lifetime)
    return np.where(rel, rng.gamma(k, 1.0 / k, len(lifetime)), rng.exponential(1.0, len(lifetime))) * lifetime


def build_clients(rng: np.random.Generator, cfg: dict, cat: Catalog, ids: np.ndarray | None = None) -> Clients:
    """cfg's n_relevant + n_other clients (relevant first) with traits drawn from cfg's shape keys;
    `ids` are their client ids (default: drawn here)."""
    n_rel, n = cfg["n_relevant"], cfg["n_relevant"] + cfg["n_other"]
    days, k = cfg["days"], len(cat.topic_weight)
    rel = np.arange(n) < n_rel

    alpha = cfg["topic_concentration"] * cat.topic_weight
    theta0 = 0.98 * rng.dirichlet(alpha, n) + 0.02 * cat.topic_weight
    theta1 = 0.4 * theta0 + 0.6 * (0.98 * rng.dirichlet(alpha, n) + 0.02 * cat.topic_weight)
    theta0_cum = row_cumsum(theta0)

    rows = np.repeat(np.arange(n), N_FAVOURITES)
    fav_topic = pick_in_rows(theta0_cum, rows, rng.random(len(rows)), k)
    fav_cat = sample_in_groups(cat.topic_cat_cum, fav_topic, rng.random(len(rows)), cat.topic_start)
    fav_w = rng.dirichlet(np.full(N_FAVOURITES, 0.8), n)

    buyer = rng.random(n) < _by_group(rel, cfg["relevant_buyers"], cfg["other_buyers"])
    arrival = _by_group(rel, np.where(rng.random(n) < cfg["relevant_start_share"], 0.0, rng.uniform(0, days, n)), rng.uniform(0, days - 1, n))
    lifetime = rng.lognormal(np.log(_by_group(rel, cfg["relevant_lifetime"], cfg["other_lifetime"])), _by_group(rel, cfg["relevant_lifetime_sigma"], 1.0))
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
        rate=rng.lognormal(np.log(_by_group(rel, cfg["relevant_rate"], cfg["other_rate"])), _by_group(rel, cfg["relevant_rate_sigma"], cfg["other_rate_sigma"])),
        arrival=arrival,
        lifetime=lifetime,
        churn_at=arrival + _active_days(rng, cfg, rel, lifetime),
        decay_days=rng.lognormal(np.log(cfg["decay_days"]), 1.0, n),
        depth=rng.lognormal(np.log(_by_group(rel, cfg["relevant_depth"], cfg["other_depth"])), 0.4),
        product_share=rng.beta(5.0, 4.0, n),
        search_rate=rng.gamma(1.0, _by_group(rel, cfg["relevant_searches"], cfg["other_searches"])),
        add_p=np.where(buyer, rng.beta(2.0, _by_group(rel, cfg["relevant_add_b"], cfg["other_add_b"])), rng.beta(1.0, cfg["browser_add_b"], n)),
        buy_p=np.where(buyer, rng.beta(2.5, cfg["buy_b"], n), 0.0),
        remove_p=rng.beta(6.0, cfg["remove_b"], n),
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


# --- oracle -------------------------------------------------------------------------------------
ORACLE_BLOCK_DAYS = 7  # the target period is integrated in blocks of this many days
ORACLE_BLOCKS = 4  # 4 x 7 = the 28 days after the split (both target windows)


def _session_params(cl: Clients, idx: np.ndarray) -> dict:
    """Per-session quantities of the funnel in sample_events, in expectation."""
    theta = np.maximum(cl.depth[idx] - 1, 0.2) / 2  # n_views = 1 + Poisson(Gamma(2, theta))
    views = (1 + 2 * theta) * cl.product_share[idx]  # expected product views
    conv = cl.add_p[idx] * cl.buy_p[idx]
    conv_s = np.minimum(0.9, 3.5 * cl.add_p[idx]) * np.maximum(cl.buy_p[idx], STAPLE_BUY_P * cl.buyer[idx])

    def p_none(q):  # P(no purchase in a session) with per-view purchase probability q
        return (1 - q) * (1 + theta * q) ** -2.0

    rho = cl.staple_share[idx]
    q_staple = cl.product_share[idx] * (0.6 * conv_s + 0.4 * conv)
    p_buy = 1 - ((1 - rho) * p_none(cl.product_share[idx] * conv) + rho * p_none(q_staple))
    return {"views": views, "conv": conv, "conv_s": conv_s, "rho": rho, "p_buy": p_buy}


def expected_buys_per_session(cl: Clients, idx: np.ndarray) -> np.ndarray:
    sp = _session_params(cl, idx)
    return sp["views"] * ((1 - sp["rho"]) * sp["conv"] + sp["rho"] * (0.6 * sp["conv_s"] + 0.4 * sp["conv"]))


def category_preference(cl: Clients, cat: Catalog, idx: np.ndarray, t_split: float) -> tuple[np.ndarray, np.ndarray]:
    """(drifted topic weights, P(category) of a non-staple category draw) at day t_split."""
    t = np.full(len(idx), float(t_split))
    w = drift_weight(cl, idx, t)[:, None]
    theta = (1 - w) * cl.theta0[idx] + w * cl.theta1[idx]
    n_cat = len(cat.cat_topic)
    fav = np.zeros((len(idx), n_cat))
    np.add.at(fav, (np.repeat(np.arange(len(idx)), N_FAVOURITES), cl.fav_cat[idx].ravel()), cl.fav_w[idx].ravel())
    loyal = cl.loyalty[idx][:, None]
    explore = cl.explore[idx][:, None]
    shop_wide = np.diff(cat.cat_global_cum, prepend=0.0)[None, :]
    return theta, explore * shop_wide + (1 - explore) * (loyal * fav + (1 - loyal) * theta @ topic_category_matrix(cat))


def _block_sku_terms(cat: Catalog, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per SKU over days [t0, t1): share of the block on sale, hype decay factor, and whether the
    novelty bonus applies (at the midpoint of its time on sale)."""
    launch = cat.sku_launch
    new = launch > 0
    on = np.clip((t1 - launch) / (t1 - t0), 0.0, 1.0)
    mid = (np.maximum(t0, launch) + t1) / 2
    age = np.maximum(mid - launch, 0.0)
    hype = np.where(new, np.exp(-age / HYPE_DAYS), 1.0)
    fresh = new & (age < NEW_SKU_DAYS) & (on > 0)
    return on * hype, fresh, on


def oracle_sku_terms(cat: Catalog, t_split: float) -> tuple[np.ndarray, list]:
    """The client-independent part of the expected SKU choice after t_split: each SKU's share of its
    category's popularity, and per block (on-sale x hype, still new, popularity-weighted SKUs on
    sale per category and price bucket: all, and new ones). Computed once for all row blocks."""
    n_cat = len(cat.cat_topic)
    cat_total = np.add.reduceat(cat.sku_weight, cat.cat_start[:-1])
    pop = cat.sku_weight / cat_total[cat.sku_cat]
    blocks = []
    for b in range(ORACLE_BLOCKS):
        base, fresh, _ = _block_sku_terms(cat, t_split + b * ORACLE_BLOCK_DAYS, t_split + (b + 1) * ORACLE_BLOCK_DAYS)
        w_all = np.zeros((n_cat, N_PRICE_BUCKETS))
        np.add.at(w_all, (cat.sku_cat, cat.sku_price), pop * base)
        w_new = np.zeros((n_cat, N_PRICE_BUCKETS))
        np.add.at(w_new, (cat.sku_cat[fresh], cat.sku_price[fresh]), (pop * base)[fresh])
        blocks.append((base, fresh, w_all, w_new))
    return pop, blocks


def oracle_expectations(
    cl: Clients, cat: Catalog, t_split: float, day_weight: np.ndarray, cat_cols: np.ndarray, sku_cols: np.ndarray,
    sku_terms: tuple | None = None,
) -> dict[str, np.ndarray]:
    """Expected purchases of each relevant client after day t_split, from its parameters and the
    catalogue only (never a sampled event): per category in cat_cols, per SKU in sku_cols (new SKUs
    included: launch date, hype and the client's novelty taste are parameters), per price bucket,
    plus sessions with a purchase per 14-day window. Counts are per 14 days (28-day mean).

    The within-category SKU choice (3 popularity-drawn candidates, the client's taste picks) is
    approximated in mean field: P(s) ~ 3 p_s y_s / (y_s + 2 sum_j p_j y_j), y = exp(taste) x on sale,
    p = the SKU's share of its category's popularity (price buckets: the plain p_s y_s / sum_j p_j y_j)."""
    idx = np.arange(cl.n_relevant)
    n, n_cat, n_sku = len(idx), len(cat.cat_topic), len(cat.sku_id)
    _, cat_pref = category_preference(cl, cat, idx, t_split)
    sp = _session_params(cl, idx)
    views, conv, conv_s, rho = sp["views"], sp["conv"], sp["conv_s"], sp["rho"]

    # Sessions per block: rate x activity x weekday, summed over the block's days.
    day0 = int(round(t_split))
    days = day0 + np.arange(ORACLE_BLOCKS * ORACLE_BLOCK_DAYS)
    week = np.where(days < len(day_weight), day_weight[np.minimum(days, len(day_weight) - 1)], 0.0)
    lam = cl.rate[idx, None] * alive(cl, idx[:, None], days[None, :] + 0.5) * week[None, :]
    lam_block = lam.reshape(n, ORACLE_BLOCKS, ORACLE_BLOCK_DAYS).sum(2)  # (n, B)
    sessions = lam_block.sum(1) / 2  # per 14 days

    staple_sku = np.zeros((n, len(sku_cols)))  # share of the client's staples that are each column SKU
    for j, s in enumerate(sku_cols):
        staple_sku[:, j] = (cl.staples[idx] == s).sum(1) / N_STAPLES
    staple_price = np.zeros((n, N_PRICE_BUCKETS))
    np.add.at(staple_price, (np.repeat(idx, N_STAPLES), cat.sku_price[cl.staples[idx]].ravel()), 1.0 / N_STAPLES)
    staple_cat = np.zeros((n, n_cat))
    np.add.at(staple_cat, (np.repeat(idx, N_STAPLES), cat.sku_cat[cl.staples[idx]].ravel()), 1.0 / N_STAPLES)
    # Category of a view that is not a staple re-buy, and the staple re-buys themselves.
    q_cat = (1 - rho)[:, None] * cat_pref + (0.4 * rho)[:, None] * (0.75 * staple_cat + 0.25 * cat_pref)
    staple_rate = (views * 0.6 * rho * conv_s)[:, None]  # staple purchases per session, x staple share
    out = {
        "cat": sessions[:, None] * (views * conv)[:, None] * q_cat[:, cat_cols]
        + sessions[:, None] * staple_rate * staple_cat[:, cat_cols],
        "sku": np.zeros((n, len(sku_cols))),
        "price": np.zeros((n, N_PRICE_BUCKETS)),
    }
    # Buying sessions per 14-day window (the churn/conversion quantity): sessions x P(buy | session).
    half = ORACLE_BLOCKS // 2
    out["buy_sessions_w1"] = lam_block[:, :half].sum(1) * sp["p_buy"]
    out["buy_sessions_w2"] = lam_block[:, half:].sum(1) * sp["p_buy"]

    pop, blocks = sku_terms if sku_terms is not None else oracle_sku_terms(cat, t_split)
    buckets_q = ((np.arange(N_PRICE_BUCKETS) + 0.5) / N_PRICE_BUCKETS)[None, :]
    g = np.exp(-((buckets_q - cl.price_level[idx, None]) ** 2) / (2 * cl.price_width[idx, None] ** 2))  # (n, P)
    nov = np.exp(cl.novelty[idx]) - 1
    q_eff = (views * conv)[:, None] * q_cat  # non-staple purchases per session in each category
    cs = cat.sku_cat[sku_cols]
    for b, (base, fresh, w_all, w_new) in enumerate(blocks):
        m = g @ w_all.T + nov[:, None] * (g @ w_new.T)  # (n, C) sum_j p_j y_j
        y = g[:, cat.sku_price[sku_cols]] * base[sku_cols] * (1 + fresh[sku_cols] * nov[:, None])
        lam_b = (lam_block[:, b] / 2)[:, None]
        out["sku"] += lam_b * q_eff[:, cs] * 3 * pop[sku_cols] * y / (y + 2 * m[:, cs])
        # Price buckets: the choice as popularity x taste (sum_s p_s y_s / m_c = 1 in each category).
        r = q_eff / m
        out["price"] += lam_b * g * (r @ w_all + nov[:, None] * (r @ w_new))
    out["sku"] += sessions[:, None] * staple_rate * staple_sku
    out["price"] += sessions[:, None] * staple_rate * staple_price
    return out


def oracle_state(
    cl: Clients,
    cat: Catalog,
    t_split: float,
    cat_cols: np.ndarray,
    sku_cols: np.ndarray,
    day_weight: np.ndarray,
    unseen: np.ndarray | None = None,
    sku_terms: tuple | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Each relevant client's latent parameters in effect at day t_split and the purchases they
    imply (no sampled future event).

    Columns: drifted topic weights; expected purchases per 14 days of each category in `cat_cols`,
    SKU in `sku_cols` and price bucket (`buys_*`), and their totals (all purchases, column SKUs
    seen before the split, `unseen` ones = new SKUs); buying sessions per target window; traits."""
    idx = np.arange(cl.n_relevant)
    t = np.full(len(idx), float(t_split))
    theta, _ = category_preference(cl, cat, idx, t_split)
    exp = oracle_expectations(cl, cat, t_split, day_weight, cat_cols, sku_cols, sku_terms)
    rate_now = cl.rate[idx] * alive(cl, idx, t)
    scalars = {
        "price_level": cl.price_level[idx],
        "price_width": cl.price_width[idx],
        "novelty": cl.novelty[idx],
        "loyalty": cl.loyalty[idx],
        "explore": cl.explore[idx],
        "staple_share": cl.staple_share[idx],
        "drift_weight": drift_weight(cl, idx, t),
        "buyer": cl.buyer[idx].astype(float),
        "log_rate_base": np.log(cl.rate[idx]),
        "log_rate_now": np.log(rate_now + 1e-4),
        "log_buys_14d": np.log(14 * rate_now * expected_buys_per_session(cl, idx) + 1e-4),
        # Totals over the label-like columns: the shared "buys a lot of these" direction.
        "buys_total": exp["price"].sum(1),
        "buys_top_skus": exp["sku"][:, ~unseen].sum(1) if unseen is not None else exp["sku"].sum(1),
        "buys_new_skus": exp["sku"][:, unseen].sum(1) if unseen is not None and unseen.any() else np.zeros(len(idx)),
        "buy_sessions_w1": exp["buy_sessions_w1"],
        "buy_sessions_w2": exp["buy_sessions_w2"],
        "p_none_w1": np.exp(-exp["buy_sessions_w1"]),
        "p_none_w2": np.exp(-exp["buy_sessions_w2"]),
        "alive_factor": alive(cl, idx, t),
        "arrived": (cl.arrival[idx] <= t_split).astype(float),
        "churned": (cl.churn_at[idx] <= t_split).astype(float),
        "log_lifetime": np.log(cl.lifetime[idx]),
        "log_decay_days": np.log(cl.decay_days[idx]),
        "depth": cl.depth[idx],
        "product_share": cl.product_share[idx],
        "search_rate": cl.search_rate[idx],
        "add_p": cl.add_p[idx],
        "buy_p": cl.buy_p[idx],
        "remove_p": cl.remove_p[idx],
    }
    columns = (
        [f"topic_{j}" for j in range(theta.shape[1])]
        + [f"buys_category_{cat.cat_id[c]}" for c in cat_cols]
        + [f"buys_sku_{cat.sku_id[s]}" for s in sku_cols]
        + [f"buys_price_{p}" for p in range(N_PRICE_BUCKETS)]
        + list(scalars)
    )
    state = np.column_stack([theta, exp["cat"], exp["sku"], exp["price"], *scalars.values()])
    return state.astype(np.float32), columns
