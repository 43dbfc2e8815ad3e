"""The oracle: each relevant client's latent state at the split and the purchases it implies.

Computed from the client's parameters and the catalogue only, never from a sampled event:
drifted topic weights, expected purchases per category / SKU / price bucket in the target
windows (the within-category SKU choice in mean field), buying sessions per window, traits.
"""
from __future__ import annotations

import numpy as np

from ubp.data.synthetic_catalog import N_PRICE_BUCKETS, Catalog, topic_category_matrix
from ubp.data.synthetic_clients import (
    HYPE_DAYS,
    N_FAVOURITES,
    N_STAPLES,
    NEW_SKU_DAYS,
    STAPLE_BUY_P,
    Clients,
    alive,
    drift_weight,
)

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
    n, n_cat = len(idx), len(cat.cat_topic)
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
