"""The `scale` preset: the real release's size (SPEC §2) x scale, with its shape at every scale.

Clients scale linearly (1M relevant and 17.7M other clients at 1.0), and so do SKUs and generic
URLs: buys per SKU and visits per page then stay as in the real data, so a SKU's popularity has
the real long tail whatever the scale. Categories scale with the square root (6.8k at 1.0, 680 at
0.01): linearly, a small scale would leave fewer categories than the category task's 100 labels.
The shape keys are per client (session rates, lifetimes, funnel rates), so event mix, history
lengths and buyer sparsity do not depend on the scale; they were chosen so that they match SPEC
§2 (benchmarks/data_stats.py measures them: reports/bench/data_stats.md). Blocks of BLOCK_CLIENTS
clients bound the generator's memory; the dataset depends on the block size (each block draws
from its own random stream), not on anything else about the machine.
"""
from __future__ import annotations

import math

from ubp.io import UbpError

REAL_RELEVANT = 1_000_000
REAL_OTHER = 17_700_000
REAL_SKUS = 1_260_000
REAL_CATEGORIES = 6_800
REAL_URLS = 12_700_000  # distinct page-visit URLs: product and listing pages included
BLOCK_CLIENTS = 50_000

SHAPE = {  # set with benchmarks/data_stats.py against SPEC §2 (see the module docstring)
    # Relevant clients: chosen among the active (each has a session; buyers' first product view is
    # bought), a few weeks of activity each with arrivals spread over the period, ~5 sessions of
    # ~3.5 page views, rare conversion otherwise: ~94% of past buyers skip a 14-day window.
    "relevant_arrival_session": True,
    "relevant_first_buy": True,
    "relevant_rate": 0.13,
    "relevant_rate_sigma": 0.5,
    "relevant_start_share": 0.25,
    "relevant_lifetime": 40.0,
    "relevant_lifetime_sigma": 0.3,
    "relevant_churn_shape": 4,
    "relevant_depth": 3.5,
    "relevant_searches": 1.2,
    "relevant_add_b": 12.5,
    "buy_b": 6.0,
    "remove_b": 6.0,
    # Other clients: mostly one short visit, a heavy tail of returning browsers, few buyers.
    "other_rate": 0.055,
    "other_rate_sigma": 1.6,
    "other_lifetime": 8.0,
    "other_depth": 1.5,
    "other_searches": 0.03,
    "other_buyers": 0.015,
    "browser_add_b": 30.0,
    # Catalogue: the real data's 12.7M URLs are nearly all visited (~12 visits each).
    "url_zipf": 0.5,
}


def preset(scale) -> dict:
    """Client and catalogue counts at `scale` x the real release, the real shape, and blocks."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 10:
        raise UbpError(f"params.yaml data.synthetic.scale: expected a number in (0, 10] or null, got {scale!r}")
    n_categories = max(100, round(REAL_CATEGORIES * math.sqrt(scale)))
    n_skus = max(3 * n_categories, round(REAL_SKUS * scale))
    return {
        "n_relevant": max(1, round(REAL_RELEVANT * scale)),
        "n_other": round(REAL_OTHER * scale),
        "n_skus": n_skus,
        "n_categories": n_categories,
        "n_urls": max(1000, round(REAL_URLS * scale) - n_skus - n_categories),
        "block_clients": BLOCK_CLIENTS,
        **SHAPE,
    }
