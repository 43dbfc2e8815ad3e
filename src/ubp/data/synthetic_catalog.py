"""The synthetic shop's catalogue: topics, categories, SKUs, URLs and their quantized text codes.

Everything here is client-independent. SKUs are indexed grouped by category (so a category is
a contiguous index range) and every category keeps one SKU available from day 0 (its anchor),
which the client-side samplers fall back to.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ubp.schema import N_PRICE_BUCKETS, VECTOR_DIM

if TYPE_CHECKING:  # the generator's settings (ubp.data.synthetic imports this module)
    from ubp.data.synthetic import SyntheticConfig

# Id ranges like the real release (all ids are random, non-contiguous, below these bounds).
CLIENT_ID_HIGH = 30_000_000
SKU_ID_HIGH = 1_900_000
CATEGORY_ID_HIGH = 7_000
URL_ID_HIGH = 13_000_000


@dataclass
class Catalog:
    topic_centroid: np.ndarray  # (K, 16) float, centre of a topic's text codes
    topic_weight: np.ndarray  # (K,) how popular each topic is among clients
    cat_topic: np.ndarray  # (C,) topic of each category
    cat_weight: np.ndarray  # (C,) popularity of a category within its topic
    cat_centroid: np.ndarray  # (C, 16) float
    cat_global_cum: np.ndarray  # cumulative shop-wide category popularity (sums to 1)
    cat_id: np.ndarray  # (C,) int64
    topic_start: np.ndarray  # (K + 1,) first category of each topic (categories are grouped by topic)
    topic_cat_cum: np.ndarray  # per topic normalized cumulative category weights, offset by topic
    sku_cat: np.ndarray  # (S,) category index, non-decreasing
    sku_weight: np.ndarray  # (S,) popularity within the category (new SKUs include their hype)
    sku_price: np.ndarray  # (S,) price bucket 0..99
    sku_price_q: np.ndarray  # (S,) price quantile in (0, 1)
    sku_launch: np.ndarray  # (S,) launch day (0 = on sale from the start)
    sku_name: np.ndarray  # (S, 16) uint8
    sku_id: np.ndarray  # (S,) int64
    cat_start: np.ndarray  # (C + 1,) first SKU index of each category
    cat_cum: np.ndarray  # per category normalized cumulative SKU weights, offset by category index
    cat_anchor: np.ndarray  # (C,) a day-0 SKU of each category
    product_url: np.ndarray  # (S,) url id of each SKU's product page
    listing_url: np.ndarray  # (C,) url id of each category's listing page
    generic_url: np.ndarray  # (n_urls,) home, cart, info, campaign pages...; index 0 = cart/checkout
    generic_cum: np.ndarray  # cumulative Zipf popularity of the generic pages (sums to 1)


def unique_ids(rng: np.random.Generator, n: int, high: int) -> np.ndarray:
    """n distinct random int64 ids in [1, high) (widened if high is too small for a sparse draw)."""
    high = max(high, 50 * n)
    if n > (high - 1) // 50 and high > 1 << 20:
        # numpy would shuffle all of range(high - 1) (7.5 GB for the real release's 18.7M client
        # ids); one step wider keeps it on its O(n) draw. Small ranges keep their former draw.
        high = 50 * n + 51
    return (rng.choice(high - 1, size=n, replace=False) + 1).astype(np.int64)


def zipf_weights(rng: np.random.Generator, n: int, exponent: float, noise: float) -> np.ndarray:
    """Zipf-like weights in random order with lognormal jitter (popularity is not id order)."""
    ranks = rng.permutation(n) + 1.0
    return ranks**-exponent * rng.lognormal(0.0, noise, n)


def offset_cumsum(weights: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Cumulative weights normalized to (g, g + 1] within each group g; rows must be sorted by group.

    `searchsorted(result, g + u, side='right')` then draws an item of group g with probability
    proportional to its weight: one vectorised call samples a different group per row.
    """
    totals = np.bincount(group, weights=weights, minlength=n_groups)
    cum = np.cumsum(weights)
    starts = np.searchsorted(group, np.arange(n_groups))
    before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    within = (cum - before[group]) / np.where(totals > 0, totals, 1.0)[group]
    return group + np.minimum(within, 1.0)


def find_sorted(cum: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`np.searchsorted(cum, values, side="right")`, the values looked up in sorted order: the same
    indices, several times faster once `cum` outgrows the CPU's cache (at the real size, 12.7M URLs:
    consecutive lookups then share their cache lines)."""
    order = np.argsort(values)
    out = np.empty(len(values), dtype=np.intp)
    out[order] = np.searchsorted(cum, values[order], side="right")
    return out


def sample_in_groups(cum: np.ndarray, group: np.ndarray, u: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Index of the item drawn in `group` with uniform `u` (see offset_cumsum)."""
    idx = find_sorted(cum, group + u)
    return np.clip(idx, starts[group], starts[group + 1] - 1)


def codes_near(rng: np.random.Generator, centre: np.ndarray, spread: float) -> np.ndarray:
    """Noisy quantization of text-embedding centres: clipped like the real codes (many 0s and 255s)."""
    return np.clip(np.rint(centre + rng.normal(0.0, spread, centre.shape)), 0, 255).astype(np.uint8)


def build_catalog(rng: np.random.Generator, cfg: SyntheticConfig) -> Catalog:
    k, n_cat, n_sku, days = cfg.n_topics, cfg.n_categories, cfg.n_skus, cfg.days
    if n_sku < 3 * n_cat:
        raise ValueError(f"n_skus ({n_sku}) must be at least 3 x n_categories ({n_cat})")

    topic_centroid = rng.normal(128.0, 75.0, (k, VECTOR_DIM))
    topic_weight = zipf_weights(rng, k, 0.6, 0.2)
    topic_weight /= topic_weight.sum()
    if n_cat < k:
        raise ValueError(f"n_categories ({n_cat}) must be at least n_topics ({k})")
    # Popular topics hold more categories; every topic has at least one.
    cat_topic = np.sort(np.concatenate([np.arange(k), rng.choice(k, n_cat - k, p=topic_weight)]))
    cat_weight = zipf_weights(rng, n_cat, cfg.category_zipf, 0.3)
    topic_total = np.bincount(cat_topic, weights=cat_weight, minlength=k)
    global_pop = topic_weight[cat_topic] * cat_weight / topic_total[cat_topic]
    cat_centroid = topic_centroid[cat_topic] + rng.normal(0.0, 35.0, (n_cat, VECTOR_DIM))
    cat_price_level = rng.beta(2.0, 2.0, n_cat)

    # Popular categories also carry more SKUs; every category has at least 3.
    share = cat_weight**0.6 / (cat_weight**0.6).sum()
    per_cat = 3 + rng.multinomial(n_sku - 3 * n_cat, share)
    sku_cat = np.repeat(np.arange(n_cat), per_cat)
    cat_start = np.concatenate([[0], np.cumsum(per_cat)])
    rank_in_cat = np.arange(n_sku) - cat_start[sku_cat]
    sku_weight = (rank_in_cat + 1.0) ** -cfg.sku_zipf * rng.lognormal(0.0, 0.5, n_sku)
    cat_anchor = cat_start[:-1]  # rank 0: the category's best seller, on sale from day 0

    # New SKUs launch uniformly over the period, except a season's wave (share new_sku_wave) that
    # launches from a day before to ~9 days after the usual split (SPEC §3 puts it 28 days before
    # the end), so that the new-SKU task's popular items sell in both target windows. They arrive
    # with hype: the popularity of one of the category's first few best sellers, x new_sku_hype.
    is_new = rng.random(n_sku) < cfg.new_sku_share
    is_new[cat_anchor] = False
    wave = rng.random(n_sku) < cfg.new_sku_wave
    split_day = days - 28
    launch = np.where(wave, rng.uniform(split_day - 1.0, split_day + 9.0, n_sku), rng.uniform(1.0, days, n_sku))
    sku_launch = np.where(is_new, np.clip(launch, 1.0, days), 0.0)
    launch_rank = rng.geometric(0.4, n_sku).astype(float)
    hyped = launch_rank ** -cfg.sku_zipf * rng.lognormal(0.0, 0.5, n_sku) * cfg.new_sku_hype
    sku_weight = np.where(is_new, hyped, sku_weight)

    # Price: a latent price around the category's level, bucketed by global quantile (uniform buckets).
    latent = cat_price_level[sku_cat] + rng.normal(0.0, 0.18, n_sku)
    sku_price = (np.argsort(np.argsort(latent, kind="stable"), kind="stable") * N_PRICE_BUCKETS) // n_sku
    sku_price_q = (sku_price + 0.5) / N_PRICE_BUCKETS

    n_urls = cfg.n_urls
    url_ids = unique_ids(rng, n_sku + n_cat + n_urls, URL_ID_HIGH)
    generic_pop = (np.arange(n_urls) + 1.0) ** -cfg.url_zipf  # index 0 (cart page) is the most visited
    return Catalog(
        topic_centroid=topic_centroid,
        topic_weight=topic_weight,
        cat_topic=cat_topic,
        cat_weight=cat_weight,
        cat_centroid=cat_centroid,
        cat_global_cum=np.cumsum(global_pop) / global_pop.sum(),
        cat_id=unique_ids(rng, n_cat, CATEGORY_ID_HIGH),
        topic_start=np.searchsorted(cat_topic, np.arange(k + 1)),
        topic_cat_cum=offset_cumsum(cat_weight, cat_topic, k),
        sku_cat=sku_cat,
        sku_weight=sku_weight,
        sku_price=sku_price.astype(np.int64),
        sku_price_q=sku_price_q,
        sku_launch=sku_launch,
        sku_name=codes_near(rng, cat_centroid[sku_cat], 28.0),
        sku_id=unique_ids(rng, n_sku, SKU_ID_HIGH),
        cat_start=cat_start,
        cat_cum=offset_cumsum(sku_weight, sku_cat, n_cat),
        cat_anchor=cat_anchor,
        product_url=url_ids[:n_sku],
        listing_url=url_ids[n_sku : n_sku + n_cat],
        generic_url=url_ids[n_sku + n_cat :],
        generic_cum=np.cumsum(generic_pop) / generic_pop.sum(),
    )


def topic_category_matrix(cat: Catalog) -> np.ndarray:
    """(K, C) P(category | topic) for the oracle."""
    k, n_cat = len(cat.topic_weight), len(cat.cat_topic)
    m = np.zeros((k, n_cat))
    m[cat.cat_topic, np.arange(n_cat)] = cat.cat_weight
    return m / np.maximum(m.sum(1, keepdims=True), 1e-300)


# --- vector strings ---------------------------------------------------------------------------
def format_vectors(rng: np.random.Generator, codes: np.ndarray) -> pa.Array:
    """16 codes per row as the real files print them, in four spacing styles chosen at random:
    numpy (`[ 12 250   3 ...]`), numpy wrapped after 9 values (`\\n` inside), single spaces,
    and padded (`[  12  250 ... ]`)."""
    cols = [pa.array(codes[:, j].astype(np.int64)).cast(pa.string()) for j in range(VECTOR_DIM)]
    width3 = pa.array(codes.max(axis=1) >= 100)
    padded = [pc.if_else(width3, pc.utf8_lpad(c, 3), pc.utf8_lpad(c, 2)) for c in cols]

    def join(parts, sep):
        return pc.binary_join_element_wise(*parts, sep)

    numpy_line = join(["[", join(padded, " "), "]"], "")
    numpy_wrapped = join(["[", join(padded[:9], " "), "\n ", join(padded[9:], " "), "]"], "")
    single = join(["[", join(cols, " "), "]"], "")
    spaced = join(["[  ", join(cols, "  "), " ]"], "")
    style = pa.array(rng.choice(4, len(codes), p=[0.3, 0.3, 0.3, 0.1]).astype(np.int8))
    return pc.choose(style, numpy_line, numpy_wrapped, single, spaced)
