"""Target affinity: a client's own history with each SKU and category the open propensity tasks name.

The challenge ships the open tasks' label sets with the data (`target/propensity_sku.npy`,
`target/propensity_category.npy`: the 100 SKUs and categories a profile will be asked about), and
the top teams built features on them. Per label and client, from the input events only:

* `buy` — purchases of the label (log1p of the count),
* `add` — add-to-carts of the label (log1p),
* `recent` — product events (buy, add, remove) on the label, each weighted by
  exp(-ln 2 x age / `half_life_days`), age in days before the cutoff (log1p of the sum): what the
  client touched lately.

`stats` picks which of the three (default all, in that order): 3 x 100 columns per task, 600 for the
two tasks (params.yaml keeps `recent` only: 200). Clients without any such event get zeros. Only the open tasks may be named: the hidden tasks' label sets (new SKUs, price buckets)
are what the scoreboard uses to measure generalisation, and a profile that read them would game it.

Why it exists: the features profile describes *how* a client shops, not *what*; on the default
data the oracle's lead over it is largest on propensity_sku, and a synthetic client re-buys its
staple SKUs, as real clients re-buy theirs. As an ensemble source it adds what the features lack.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from ubp import schema
from ubp.features.build import connect_for
from ubp.io import UbpError, load_npy
from ubp.models.base import EmbedContext

ALLOWED_TASKS = (schema.PROPENSITY_SKU, schema.PROPENSITY_CATEGORY)
STATS = ("buy", "add", "recent")
KIND = {schema.PRODUCT_BUY: "buy", schema.ADD_TO_CART: "add", schema.REMOVE_FROM_CART: "remove"}


def tasks_from(cfg: dict) -> list[str]:
    tasks = list(cfg.get("tasks", ALLOWED_TASKS))
    bad = [t for t in tasks if t not in ALLOWED_TASKS]
    if bad or not tasks:
        raise UbpError(f"params.yaml: affinity.tasks may name only the open propensity tasks "
                       f"({', '.join(ALLOWED_TASKS)}); got {', '.join(map(str, bad)) or 'none'}")
    return tasks


def stats_from(cfg: dict) -> list[str]:
    stats = list(cfg.get("stats", STATS))
    bad = [s for s in stats if s not in STATS]
    if bad or not stats or len(set(stats)) != len(stats):
        raise UbpError(f"params.yaml: affinity.stats must be distinct names among {', '.join(STATS)}; got {stats}")
    return [s for s in STATS if s in stats]


def label_set(ctx: EmbedContext, task: str) -> np.ndarray:
    path = ctx.targets_dir / f"{task}.npy"
    values = load_npy(path)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise UbpError(f"{path}: expected a 1-D integer array of {schema.PROPENSITY_COLUMN[task]} ids, "
                       f"got {values.dtype} of shape {values.shape}")
    if len(np.unique(values)) != len(values):
        raise UbpError(f"{path}: duplicate {schema.PROPENSITY_COLUMN[task]} ids")
    return values.astype(np.int64)


def _product_events_sql(ctx: EmbedContext) -> str:
    """The `clients`' product events strictly before the cutoff with their kind, sku and category
    (other clients' events are dropped first: the real data has ~18 times more of them)."""
    cutoff = ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT)
    parts = [f"SELECT client_id, timestamp, sku, '{kind}' AS kind FROM read_parquet('{ctx.events(event)}') "
             f"WHERE timestamp < TIMESTAMP '{cutoff}' AND client_id IN (SELECT client_id FROM clients)"
             for event, kind in KIND.items()]
    return (f"SELECT e.*, p.category, date_diff('second', e.timestamp, TIMESTAMP '{cutoff}') / 86400.0 AS age "
            f"FROM ({' UNION ALL '.join(parts)}) e JOIN read_parquet('{ctx.properties_path}') p USING (sku)")


def task_block(con, ctx: EmbedContext, task: str, half_life_days: float, stats: list[str] = STATS) -> np.ndarray:
    """(clients x len(stats) * labels) log1p statistics of the clients' events on each label of `task`."""
    values = label_set(ctx, task)
    column = schema.PROPENSITY_COLUMN[task]
    con.register("labels", pa.table({"value": values, "j": np.arange(len(values), dtype=np.int64)}))
    rate = math.log(2.0) / float(half_life_days)
    rows = con.execute(
        f"SELECT c.row, l.j, count(*) FILTER (WHERE e.kind = 'buy') AS buy, "
        f"count(*) FILTER (WHERE e.kind = 'add') AS add, sum(exp(-{rate} * e.age)) AS recent "
        f"FROM events e JOIN clients c USING (client_id) JOIN labels l ON e.{column} = l.value GROUP BY ALL"
    ).fetchnumpy()
    con.unregister("labels")
    out = np.zeros((len(ctx.client_ids), len(values), len(stats)), dtype=np.float64)
    for k, stat in enumerate(stats):
        out[rows["row"], rows["j"], k] = rows[stat]
    return np.log1p(out.reshape(len(ctx.client_ids), -1)).astype(np.float32)


def embed(ctx: EmbedContext, cfg: dict) -> np.ndarray:
    half_life = float(cfg.get("half_life_days", 14))
    if not half_life > 0:
        raise UbpError(f"params.yaml: affinity.half_life_days must be positive, got {half_life}")
    tasks, stats = tasks_from(cfg), stats_from(cfg)
    with connect_for(ctx.feature_settings, threads=int(cfg.get("threads", 2))) as con:
        con.register("clients", pa.table({"client_id": ctx.client_ids, "row": np.arange(len(ctx.client_ids))}))
        con.execute(f"CREATE TEMP TABLE events AS {_product_events_sql(ctx)}")
        blocks = [task_block(con, ctx, task, half_life, stats) for task in tasks]
    k = len(stats)
    ctx.info["layout"] = (f"per task ({', '.join(tasks)}): label j's {', '.join(stats)} at columns "
                          + ", ".join(f"{k}j+{i}" if i else f"{k}j" for i in range(k)))
    return np.concatenate(blocks, axis=1)
