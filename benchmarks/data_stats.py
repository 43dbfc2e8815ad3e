"""Shape of raw-layout datasets beside the real release's figures (SPEC §2), plus task signal.

    python benchmarks/data_stats.py [--raw-dir data/synthetic] [--generate] [--scale 0.01 0.1]
                                    [--scale-dir /tmp/ubp_scale] [--out reports/bench/data_stats.md]

--generate (or a missing raw dir) first runs the generator with its defaults into --raw-dir and
reports its wall time and peak RSS. Each --scale adds a column: the generator's `scale` preset
(the real release's size x scale, its shape) written to --scale-dir/<scale> in a child process,
whose wall time and peak RSS are reported. The "signal" section scores each task in the
validation window with untrained one-number heuristics, from input history and from the oracle
state (if present), to show the tasks are learnable but not trivial.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
from sklearn.metrics import roc_auc_score

from ubp import schema as S
from ubp.io import save_text

REAL = {  # SPEC §2
    S.PAGE_VISIT: 150_713_186, S.SEARCH_QUERY: 9_571_258, S.ADD_TO_CART: 5_235_882,
    S.REMOVE_FROM_CART: 1_697_891, S.PRODUCT_BUY: 1_682_296,
}
DAY = np.timedelta64(1, "D")


def load(con, raw: Path) -> dict:
    for name in S.EVENT_TYPES:
        col = S.EVENT_VALUE_COLUMN[name]
        value = f"{col} AS value" if name != S.SEARCH_QUERY else "NULL::BIGINT AS value"
        con.execute(
            f"CREATE TABLE {name} AS SELECT client_id, CAST(timestamp AS TIMESTAMP) AS ts, {value}, "
            f"'{name}' AS kind FROM read_parquet('{raw / f'{name}.parquet'}')"
        )
    con.execute(f"CREATE TABLE props AS SELECT * FROM read_parquet('{raw / 'product_properties.parquet'}')")
    rel = np.load(raw / S.RELEVANT_CLIENTS_FILE)
    con.execute("CREATE TABLE rel AS SELECT unnest(?::BIGINT[]) AS client_id", [rel.tolist()])
    con.execute("CREATE VIEW ev AS " + " UNION ALL ".join(f"SELECT * FROM {n}" for n in S.EVENT_TYPES))
    end = con.execute("SELECT max(ts) FROM product_buy").fetchone()[0]
    start = np.datetime64(end, "s").astype("datetime64[D]") - 27 * DAY
    return {"relevant": rel, "end": np.datetime64(end, "s"), "start": start.astype("datetime64[s]"),
            "mid": (start + 14 * DAY).astype("datetime64[s]")}


def pct(con, where: str) -> list:
    q = (f"SELECT quantile_cont(n, 0.5), quantile_cont(n, 0.9), quantile_cont(n, 0.99), max(n) FROM "
         f"(SELECT client_id, count(*) AS n FROM ev {where} GROUP BY client_id)")
    return [round(x, 1) for x in con.execute(q).fetchone()]


def shape_rows(con, split: dict) -> list[tuple[str, str, str]]:
    rows = []
    counts = {n: con.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in S.EVENT_TYPES}
    for n in S.EVENT_TYPES:
        rows.append((f"{n} rows (÷ buys)", f"{counts[n]:,} ({counts[n] / counts[S.PRODUCT_BUY]:.1f})",
                     f"{REAL[n]:,} ({REAL[n] / REAL[S.PRODUCT_BUY]:.1f})"))
    rows.append(("total events", f"{sum(counts.values()):,}", f"{sum(REAL.values()):,}"))
    n_clients = con.execute("SELECT count(DISTINCT client_id) FROM ev").fetchone()[0]
    rows.append(("clients with events / relevant", f"{n_clients:,} / {len(split['relevant']):,}", "18.7M / 1M"))
    rows.append(("events per client p50/p90/p99/max", "/".join(map(str, pct(con, ""))), "2 / 18 / 119 / 36k"))
    rows.append(("non-relevant: events per client p50/p90/p99/max",
                 "/".join(map(str, pct(con, "WHERE client_id NOT IN (SELECT client_id FROM rel)"))), "≈ all clients"))
    rows.append(("relevant: events per client p50/p90/p99/max",
                 "/".join(map(str, pct(con, "WHERE client_id IN (SELECT client_id FROM rel)"))), "longer"))
    for n, real in ((S.PAGE_VISIT, "18"), (S.SEARCH_QUERY, "5")):
        med = con.execute(f"SELECT quantile_cont(n, 0.5) FROM (SELECT count(*) n FROM {n} "
                          f"WHERE client_id IN (SELECT client_id FROM rel) GROUP BY client_id)").fetchone()[0]
        rows.append((f"relevant: median {n} (clients with any)", f"{med:.0f}", real))
    no_event = con.execute("SELECT count(*) FROM rel WHERE client_id NOT IN (SELECT client_id FROM ev)").fetchone()[0]
    rows.append(("relevant clients with no event", f"{no_event:,}", "-"))
    active = con.execute("SELECT count(DISTINCT client_id) FROM product_buy WHERE ts < ? AND client_id IN "
                         "(SELECT client_id FROM rel)", [split["start"].item()]).fetchone()[0]
    rows.append(("relevant with a buy before the split", f"{active / len(split['relevant']):.1%}", "74.5%"))
    for who, where in (("past buyers", ""), ("relevant past buyers", "AND client_id IN (SELECT client_id FROM rel)")):
        share = con.execute(
            f"WITH past AS (SELECT DISTINCT client_id FROM product_buy WHERE ts < ? {where}), "
            "win AS (SELECT DISTINCT client_id FROM product_buy WHERE ts >= ? AND ts < ?) "
            "SELECT avg(CASE WHEN win.client_id IS NULL THEN 1 ELSE 0 END) FROM past LEFT JOIN win USING (client_id)",
            [split["start"].item(), split["start"].item(), split["mid"].item()]).fetchone()[0]
        rows.append((f"{who}: no buy in the 14-day train window", f"{share:.1%}", "≈94%"))
    per_bucket = con.execute("SELECT count(*) FROM props GROUP BY price").fetchnumpy()["count_star()"]
    bought = con.execute("SELECT count(*) FROM product_buy JOIN props ON value = sku GROUP BY price").fetchnumpy()
    bought = bought["count_star()"]
    rows.append(("price buckets: SKUs per bucket min/max; buys CV", f"{per_bucket.min()}/{per_bucket.max()}; "
                 f"{bought.std() / bought.mean():.2f}", "roughly uniform"))
    for what, q, real in (
        ("SKUs in properties / in events", "SELECT (SELECT count(*) FROM props), (SELECT count(DISTINCT value) FROM "
         "(SELECT value FROM product_buy UNION ALL SELECT value FROM add_to_cart UNION ALL SELECT value FROM remove_from_cart))", "1.26M"),
        ("categories / urls", "SELECT (SELECT count(DISTINCT category) FROM props), (SELECT count(DISTINCT value) FROM page_visit)",
         "6.8k / 12.7M"),
    ):
        a, b = con.execute(q).fetchone()
        rows.append((what, f"{a:,} / {b:,}", real))
    mult5 = con.execute("SELECT avg(CASE WHEN second(ts) % 5 = 0 THEN 1 ELSE 0 END) FROM ev").fetchone()[0]
    rows.append(("timestamps on a multiple of 5 s", f"{mult5:.1%}", "mostly"))
    rows.append(("date range", f"{con.execute('SELECT min(ts) FROM ev').fetchone()[0]} .. {split['end']}",
                 "2022-06-23 .. 2022-11-09"))
    return rows


def window_labels(con, split, col: str, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """(client ids, label values) of every purchase in [lo, hi), one pair per buy event, any client."""
    df = con.execute(f"SELECT client_id, {col} AS v FROM product_buy JOIN props ON value = sku "
                     "WHERE ts >= ? AND ts < ?", [lo.item(), hi.item()]).fetchnumpy()
    return df["client_id"], df["v"]


def label_matrix(clients, values, rel, labels) -> np.ndarray:
    y = np.zeros((len(rel), len(labels)), bool)
    r = np.searchsorted(np.sort(rel), clients)
    order = np.argsort(rel)
    ok = (r < len(rel)) & (np.sort(rel)[np.minimum(r, len(rel) - 1)] == clients) & np.isin(values, labels)
    y[order[r[ok]], np.searchsorted(labels, values[ok])] = True
    return y


def macro_auc(y: np.ndarray, score: np.ndarray) -> tuple[float, int]:
    """Macro AUROC with labels lacking positives or negatives scored 0 (as torchmetrics does)."""
    aucs = [roc_auc_score(y[:, j], score[:, j]) if 0 < y[:, j].sum() < len(y) else 0.0 for j in range(y.shape[1])]
    return float(np.mean(aucs)), int(sum(1 for j in range(y.shape[1]) if y[:, j].sum() == 0))


def signal_rows(con, split, raw: Path) -> list[tuple]:
    rel, start, mid, end = split["relevant"], split["start"], split["mid"], split["end"] + np.timedelta64(1, "s")
    first = np.datetime64("1970-01-01T00:00:00")
    oracle = None
    if (raw / S.ORACLE_SUBDIR / "state.npy").exists():
        ids = np.load(raw / S.ORACLE_SUBDIR / "client_ids.npy")
        state = np.load(raw / S.ORACLE_SUBDIR / "state.npy")
        cols = json.loads((raw / S.ORACLE_SUBDIR / "columns.json").read_text())
        oracle = (state[np.argsort(ids)][np.searchsorted(np.sort(ids), rel)], {c: i for i, c in enumerate(cols)})
    rows = []
    # History features: per relevant client, input buys per label value (+ cart adds and views weighted less).
    for task, col in ((S.PROPENSITY_CATEGORY, "category"), (S.PROPENSITY_SKU, "sku"), (S.PROPENSITY_NEW_SKU, "sku"),
                      (S.PROPENSITY_PRICE, "price")):
        tc, tv = window_labels(con, split, col, start, mid)
        vc, vv = window_labels(con, split, col, mid, end)
        if task == S.PROPENSITY_NEW_SKU:
            seen = con.execute("SELECT DISTINCT value FROM (SELECT value, ts FROM product_buy UNION ALL SELECT value, ts "
                               "FROM add_to_cart UNION ALL SELECT value, ts FROM remove_from_cart) WHERE ts < ?",
                               [start.item()]).fetchnumpy()["value"]
            pool = np.concatenate([tv, vv])
            pool = pool[~np.isin(pool, seen)]
        else:
            pool = tv
        ids, cnt = np.unique(pool, return_counts=True)
        order = np.lexsort((ids, -cnt))
        labels = np.sort(ids[order[: S.N_TARGET_LABELS]] if task != S.PROPENSITY_PRICE else ids)
        y = label_matrix(vc, vv, rel, labels)
        hc, hv = window_labels(con, split, col, first, start)
        hist = label_matrix(hc, hv, rel, labels).astype(float)
        pos = y.sum(0)
        auc_hist, none = macro_auc(y, hist + 1e-3 * cnt[np.isin(ids, labels)] / cnt.max())
        auc_oracle = "-"
        if oracle is not None:
            prefix = {"category": "buys_category_", "sku": "buys_sku_", "price": "buys_price_"}[col]
            idx = [oracle[1].get(f"{prefix}{v}") for v in labels]
            score = np.column_stack([oracle[0][:, i] if i is not None else np.zeros(len(rel)) for i in idx])
            auc_oracle = f"{macro_auc(y, score)[0]:.3f} ({sum(i is None for i in idx)} missing cols)"
        rows.append((task, f"{len(labels)} labels; validation positives min/median {pos.min()}/{int(np.median(pos))}; "
                     f"{none} with none", f"{auc_hist:.3f}", auc_oracle))
    # Churn / conversion: score = input buys in the last 28 days (history) vs oracle expected buys.
    bc, _ = window_labels(con, split, "sku", mid, end)
    no_buy = ~np.isin(rel, bc)
    hc, _ = window_labels(con, split, "sku", start - 28 * DAY, start)
    recent = np.array([0.0] * len(rel))
    u, n = np.unique(hc, return_counts=True)
    recent[np.isin(rel, u)] = n[np.searchsorted(u, rel[np.isin(rel, u)])]
    past, _ = window_labels(con, split, "sku", first, start)
    active = np.isin(rel, past)
    for task, mask in ((S.CHURN, active), (S.CONVERSION, np.ones(len(rel), bool))):
        o = "-"
        if oracle is not None:
            o = f"{roc_auc_score(no_buy[mask], oracle[0][mask, oracle[1]['p_none_w2']]):.3f}"
        rows.append((task, f"{mask.sum():,} clients, {no_buy[mask].mean():.1%} positive (no buy)",
                     f"{roc_auc_score(no_buy[mask], -recent[mask]):.3f}", o))
    return rows


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def generate_scaled(scale: float, out: Path) -> str:
    """The `scale` preset into `out` in a child process; its wall time, peak RSS and load."""
    code = ("from pathlib import Path; from ubp.data.synthetic import generate, synthetic_config; "
            f"generate(Path({str(out)!r}), synthetic_config({{'scale': {scale}}}))")
    load = os.getloadavg()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
    return (f"`scale: {scale}` generated in **{secs:.0f} s wall, peak RSS {rss:.0f} MB** "
            f"({os.cpu_count()} CPUs, load average {load[0]:.1f} before)")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw-dir", type=Path, default=S.SYNTHETIC_DIR)
    ap.add_argument("--generate", action="store_true", help="(re)generate the default config into --raw-dir first")
    ap.add_argument("--scale", type=float, nargs="*", default=[], help="also generate and describe the scale preset")
    ap.add_argument("--scale-dir", type=Path, default=Path("/tmp/ubp_scale"))
    ap.add_argument("--out", type=Path, default=S.BENCH_DIR / "data_stats.md")
    args = ap.parse_args(argv)
    parts = [f"# Data statistics: `{args.raw_dir}`" + "".join(f", `scale: {x}`" for x in args.scale) + "\n"]
    if args.generate or not (args.raw_dir / f"{S.PRODUCT_BUY}.parquet").exists():
        from ubp.config import as_dict
        from ubp.data.synthetic import SyntheticConfig, generate

        t0 = time.perf_counter()
        generate(args.raw_dir, SyntheticConfig())
        secs, rss = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        parts.append(f"Generated with the default config ({', '.join(f'{k}={v}' for k, v in as_dict(SyntheticConfig()).items())}):\n"
                     f"**{secs:.1f} s wall, peak RSS {rss:.0f} MB** (this process, {os.cpu_count()} CPUs).\n")
    datasets = {"default": args.raw_dir}
    for scale in args.scale:
        datasets[f"scale {scale}"] = args.scale_dir / str(scale)
        parts.append(generate_scaled(scale, datasets[f"scale {scale}"]) + ".\n")
    columns, signals = {}, {}
    for name, raw in datasets.items():
        con = duckdb.connect()
        split = load(con, raw)
        parts.append(f"{name}: split (SPEC §3) train_target_start {split['start']}, validation_target_start "
                     f"{split['mid']}, end_date {split['end']}.\n")
        columns[name] = shape_rows(con, split)
        signals[name] = signal_rows(con, split, raw)
        con.close()
    parts.append("## Shape beside the real release\n")
    parts.append("The `scale` columns are the generator's preset for the real release's size x scale (SPEC §2 figures "
                 "divided by the scale for counts; the shape rows do not depend on it).\n")
    first = next(iter(columns.values()))
    rows = [(r[0], *(columns[n][i][1] for n in columns), r[2]) for i, r in enumerate(first)]
    parts.append(table(("statistic", *columns, "real (SPEC §2)"), rows) + "\n")
    parts.append("## Task signal (validation window, relevant clients, untrained heuristics)\n")
    parts.append("History score: the client's input purchases of that label (propensity) or minus its purchases in the "
                 "last 28 input days (churn/conversion). Oracle score: its expected purchases of that label "
                 "(`buys_*` column) / its P(no purchase) in the validation window (`p_none_w2`). Labels as SPEC §4 (top 100 of the train window; new SKUs over both windows). "
                 "AUROC macro, labels without positives count 0.\n")
    for name, rows in signals.items():
        parts.append(f"### {name}\n")
        parts.append(table(("task", "labels", "AUROC history", "AUROC oracle"), rows) + "\n")
    save_text(args.out, "\n".join(parts))
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
