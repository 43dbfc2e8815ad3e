"""Feature families about *what* a client touches: diversity, exploration, funnel, prices, popularity, codes.

"Product events" are purchases, add-to-carts and remove-from-carts together.
"""
from __future__ import annotations

from ubp import schema
from ubp.features.sources import ITEM_WORD, NONE_VALUE, TYPES, Block, Family, Feature, FeaturesConfig, ratio

PRODUCT = "type IN ('buy', 'add', 'remove')"

# (scope, key): the distributions whose entropy and Gini are measured
DISTRIBUTIONS = (("product", "category"), ("product", "price"), ("buy", "category"), ("buy", "price"),
                 ("visit", "item"))


def _totals() -> str:
    """Per client: events (n_*) and distinct items (d_*) per type, all events, product events.

    Read from the per-item table (one row per client, type and item) rather than with DISTINCT
    aggregates over the events, which are much slower in DuckDB.
    """
    exprs = [f"coalesce(sum(n) FILTER (WHERE type = '{t}'), 0) AS n_{t}" for t in TYPES]
    exprs += [f"count(*) FILTER (WHERE type = '{t}') AS d_{t}" for t in TYPES]
    exprs += ["sum(n) AS n_any", f"coalesce(sum(n) FILTER (WHERE {PRODUCT}), 0) AS n_product",
              f"count(DISTINCT category) FILTER (WHERE {PRODUCT}) AS d_product_category",
              f"count(DISTINCT item) FILTER (WHERE {PRODUCT}) AS d_product_item"]
    return f"SELECT client_id, {', '.join(exprs)} FROM items GROUP BY client_id"


def diversity(settings: FeaturesConfig) -> Family:
    """Entropy (natural log) and Gini of a client's counts over the values it touched."""
    counts = " UNION ALL ".join(
        f"SELECT client_id, '{scope}_{key}' AS dist, {key} AS value, sum(n) AS n FROM items "
        f"WHERE {PRODUCT if scope == 'product' else f'type = {chr(39)}{scope}{chr(39)}'} AND {key} IS NOT NULL "
        "GROUP BY ALL" for scope, key in DISTRIBUTIONS)
    # Gini of counts x_1 <= ... <= x_k: sum_i (2i - k - 1) x_i / (k * sum x); 0 for a single value.
    ranked = ("SELECT *, row_number() OVER (PARTITION BY client_id, dist ORDER BY n, value) AS i, "
              "count(*) OVER (PARTITION BY client_id, dist) AS k, sum(n) OVER (PARTITION BY client_id, dist) AS total "
              f"FROM ({counts})")
    per_dist = ("SELECT client_id, dist, 0.0 - sum(n / total * ln(n / total)) AS entropy, "
                "sum((2 * i - k - 1) * n) / (any_value(k) * any_value(total)) AS gini "
                f"FROM ({ranked}) GROUP BY client_id, dist")
    exprs, features = [], []
    for scope, key in DISTRIBUTIONS:
        dist = f"{scope}_{key}"
        label = "url" if scope == "visit" else key
        name_base = f"{scope}_{label}"
        what = "page visits" if scope == "visit" else ("product events" if scope == "product" else "purchases")
        for stat, doc in (("entropy", "entropy (nats)"), ("gini", "Gini coefficient")):
            exprs.append(f"max({stat}) FILTER (WHERE dist = '{dist}') AS {name_base}_{stat}")
            features.append(Feature(f"{name_base}_{stat}", f"{doc} of the client's {what} over {label} values"
                                                            " (none: 0)"))
    query = f"SELECT client_id, {', '.join(exprs)} FROM ({per_dist}) GROUP BY client_id"
    return Family("diversity", "Diversity of categories, prices and urls", [Block(query, features)])


def exploration(settings: FeaturesConfig) -> Family:
    exprs, features = [], []
    for t in TYPES:
        exprs.append(f"{ratio(f'd_{t}', f'n_{t}')} AS {t}_exploration")
        features.append(Feature(f"{t}_exploration", f"distinct {ITEM_WORD[t]} / number of '{t}' events (none: 0)"))
    exprs.append(f"{ratio('d_product_item', 'n_product')} AS product_sku_exploration")
    features.append(Feature("product_sku_exploration", "distinct skus / number of product events (none: 0)"))
    exprs.append(f"{ratio('d_product_category', 'n_product')} AS product_category_exploration")
    features.append(Feature("product_category_exploration", "distinct categories / number of product events (none: 0)"))
    query = f"SELECT client_id, {', '.join(exprs)} FROM ({_totals()})"
    return Family("exploration", "Exploration ratios (all history)", [Block(query, features)])


def _later_bought(key: str) -> str:
    """Per client: the share of the distinct `key` values it added to cart that it bought at or after the first add."""
    return (f"SELECT a.client_id, avg(CASE WHEN b.last_buy >= a.first_add THEN 1.0 ELSE 0.0 END) AS share FROM "
            f"(SELECT client_id, {key}, min(ts) AS first_add FROM events WHERE type = 'add' GROUP BY ALL) a "
            f"LEFT JOIN (SELECT client_id, {key}, max(ts) AS last_buy FROM events WHERE type = 'buy' GROUP BY ALL) b "
            f"ON a.client_id = b.client_id AND a.{key} = b.{key} GROUP BY a.client_id")


def funnel(settings: FeaturesConfig) -> Family:
    rates = (
        ("funnel_visit_per_search", "n_visit", "n_search", "page visits / searches"),
        ("funnel_add_per_visit", "n_add", "n_visit", "add-to-carts / page visits"),
        ("funnel_buy_per_add", "n_buy", "n_add", "purchases / add-to-carts"),
        ("funnel_buy_per_visit", "n_buy", "n_visit", "purchases / page visits"),
        ("funnel_buy_per_search", "n_buy", "n_search", "purchases / searches"),
        ("funnel_remove_per_add", "n_remove", "n_add", "remove-from-carts / add-to-carts"),
    )
    exprs = [f"{ratio(num, den)} AS {name}" for name, num, den, _ in rates]
    features = [Feature(name, f"{doc} (zero denominator: 0)") for name, _, _, doc in rates]
    exprs.append("CASE WHEN n_add > 0 THEN 1 - least(1.0, n_buy / n_add) ELSE 0 END AS funnel_cart_abandonment")
    features.append(Feature("funnel_cart_abandonment", "1 - min(1, purchases / add-to-carts) (no add-to-cart: 0)"))
    for t in TYPES:
        exprs.append(f"{ratio(f'n_{t}', 'n_any')} AS {t}_share")
        features.append(Feature(f"{t}_share", f"share of '{t}' among all the client's events"))
    mix = Block(f"SELECT client_id, {', '.join(exprs)} FROM ({_totals()})", features)
    later = [Block(f"SELECT client_id, share AS funnel_{key}_conversion FROM ({_later_bought(column)})",
                   [Feature(f"funnel_{key}_conversion", f"share of the distinct {key}s the client added to cart that "
                                                        "it bought at or after its first add (no add: 0)")])
             for key, column in (("sku", "item"), ("category", "category"))]
    return Family("funnel", "Funnel rates and event mix (all history)", [mix, *later])


def prices(settings: FeaturesConfig) -> Family:
    exprs, features = [], []
    for t in ("buy", "add"):
        for stat, agg, default in (("mean", "avg", NONE_VALUE), ("std", "stddev_pop", 0.0),
                                   ("min", "min", NONE_VALUE), ("max", "max", NONE_VALUE)):
            name = f"{t}_price_{stat}"
            exprs.append(f"{agg}(price) FILTER (WHERE type = '{t}') AS {name}")
            features.append(Feature(name, f"{stat} of the price bucket (0..99) over the client's '{t}' events "
                                          f"(none: {default:g})", default))
    query = f"SELECT client_id, {', '.join(exprs)} FROM events GROUP BY client_id"
    return Family("prices", "Prices of bought and added items", [Block(query, features)])


def popularity(settings: FeaturesConfig) -> Family:
    """Global popularity = purchase (or visit) counts over every client's events before the cutoff."""
    sku = f"SELECT {schema.SKU} AS item, ln(1 + count(*)) AS pop FROM all_buy GROUP BY ALL"
    category = (f"SELECT p.{schema.CATEGORY} AS category, ln(1 + count(*)) AS pop FROM all_buy b "
                f"JOIN props p ON b.{schema.SKU} = p.{schema.SKU} GROUP BY ALL")
    url = f"SELECT {schema.URL} AS item, ln(1 + count(*)) AS pop FROM all_visit GROUP BY ALL"
    product_items = (f"SELECT e.client_id, e.type, coalesce(s.pop, 0) AS sku_pop, coalesce(c.pop, 0) AS cat_pop "
                     f"FROM events e LEFT JOIN ({sku}) s ON e.item = s.item "
                     f"LEFT JOIN ({category}) c ON e.category = c.category WHERE e.{PRODUCT}")
    product = ("SELECT client_id, avg(sku_pop) AS product_sku_popularity, "
               "avg(sku_pop) FILTER (WHERE type = 'buy') AS buy_sku_popularity, "
               f"avg(cat_pop) AS product_category_popularity FROM ({product_items}) GROUP BY client_id")
    visits = (f"SELECT e.client_id, avg(coalesce(u.pop, 0)) AS visit_url_popularity FROM events e "
              f"LEFT JOIN ({url}) u ON e.item = u.item WHERE e.type = 'visit' GROUP BY e.client_id")
    doc = "mean over the client's {what} of ln(1 + {count}) (none: 0)"
    return Family("popularity", "Popularity of what the client touches", [
        Block(product, [
            Feature("product_sku_popularity", doc.format(what="product events", count="purchases of the sku")),
            Feature("buy_sku_popularity", doc.format(what="purchases", count="purchases of the sku")),
            Feature("product_category_popularity", doc.format(what="product events",
                                                              count="purchases in the sku's category"))]),
        Block(visits, [Feature("visit_url_popularity", doc.format(what="page visits", count="visits of the url"))]),
    ])


def codes(settings: FeaturesConfig) -> Family:
    """Mean of each of the 16 quantized text-embedding codes (0..255)."""
    blocks = []
    for t, column, what in (("buy", schema.NAME, "bought items' names"), ("add", schema.NAME, "added items' names"),
                            ("search", schema.QUERY, "search queries")):
        names = [f"{t}_{column}_mean_{i}" for i in range(schema.VECTOR_DIM)]
        exprs = [f"avg({column}[{i + 1}]) AS {n}" for i, n in enumerate(names)]
        query = f"SELECT client_id, {', '.join(exprs)} FROM ev_{t} GROUP BY client_id"
        blocks.append(Block(query, [Feature(n, f"mean of code {i} of the {what} (none: {NONE_VALUE:g})", NONE_VALUE)
                                    for i, n in enumerate(names)]))
    return Family("codes", "Mean name and query codes", blocks)

