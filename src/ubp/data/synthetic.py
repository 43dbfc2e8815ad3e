"""Stage `generate`: a synthetic dataset in the exact raw layout of the RecSys Challenge 2025.

Clients (synthetic_clients) have sessions and events (synthetic_events) from a latent
behavioural model over a shared catalogue (synthetic_catalog). The oracle/ folder holds each
relevant client's latent state at the split point SPEC §3 derives from the buys.

With `block_clients` unset (the default) the whole population is one block drawn from the main
random stream. With it set - as `scale` does (synthetic_scale: the real release's figures x
scale, and its shape) - clients are drawn block by block, each from its own stream, and written
as they come (synthetic_output), so memory holds one block whatever the dataset's size.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from ubp import schema as S
from ubp.data.synthetic_catalog import CLIENT_ID_HIGH, build_catalog, format_vectors, unique_ids
from ubp.data.synthetic_clients import build_clients
from ubp.data.synthetic_events import DAY, day_weights, sample_block
from ubp.data.synthetic_output import (
    EventWriter,
    Purchases,
    block_tables,
    oracle_columns,
    shuffled_table,
    write_oracle_state,
)
from ubp.data.synthetic_scale import preset
from ubp.data.timestamps import TimestampsConfig
from ubp.config import build
from ubp.io import UbpError, atomic_dir, save_json, save_npy, save_text
from ubp.params import load_params

log = logging.getLogger("ubp.generate")

@dataclass(frozen=True)
class SyntheticConfig:
    """params.yaml's `data.synthetic`, the only home of the generator's defaults (`synthetic_config`
    puts the `scale` preset between these defaults and the keys the user set)."""
    seed: int = 2025
    scale: float | None = None  # a number: the real release's size x scale and its shape (see synthetic_scale)
    block_clients: int | None = None  # clients drawn and written together (None: all at once, one random stream)
    n_relevant: int = 12_000
    n_other: int = 100_000  # non-relevant clients (each gets at least one session)
    n_skus: int = 24_000
    n_categories: int = 600
    n_topics: int = 24
    n_urls: int = 50_000  # generic pages; every SKU and category also has its own page
    start_date: str = "2022-06-23"
    days: int = 140
    # Client traits, relevant / other clients (synthetic_clients.build_clients).
    relevant_rate: float = 0.16  # median sessions per day of an active relevant client
    other_rate: float = 0.05
    relevant_rate_sigma: float = 1.0  # lognormal spread of the session rate
    other_rate_sigma: float = 1.0
    relevant_start_share: float = 0.9  # relevant clients active from day 0 (the rest arrive uniformly)
    relevant_lifetime: float = 300.0  # median mean-days from arrival to churn
    other_lifetime: float = 8.0
    relevant_lifetime_sigma: float = 0.8  # its lognormal spread
    relevant_churn_shape: float = 1.0  # Gamma shape of the days to churn around the lifetime (1: exponential)
    relevant_arrival_session: bool = False  # every relevant client has at least its arrival session
    relevant_first_buy: bool = False  # a relevant buyer's first product view is always bought
    decay_days: float = 7.0  # median time constant of the activity's decay after churn
    relevant_depth: float = 5.0  # median mean page views per session
    other_depth: float = 2.0
    relevant_searches: float = 0.9  # mean searches per session
    other_searches: float = 0.4
    relevant_buyers: float = 0.9  # share of clients who ever convert
    other_buyers: float = 0.5
    relevant_add_b: float = 9.0  # P(add | product view) of a buyer ~ Beta(2, b)
    other_add_b: float = 5.0
    browser_add_b: float = 40.0  # ... of a non-buyer ~ Beta(1, b)
    buy_b: float = 5.0  # P(buy | added) of a buyer ~ Beta(2.5, b)
    remove_b: float = 2.5  # P(remove | added, not bought) ~ Beta(6, b)
    # Catalogue (synthetic_catalog.build_catalog).
    topic_concentration: float = 2.4  # Dirichlet total: lower = clients focus on fewer topics
    category_zipf: float = 1.1
    sku_zipf: float = 1.5
    url_zipf: float = 1.1  # popularity exponent of the generic pages (lower: more distinct pages visited)
    new_sku_share: float = 0.15  # SKUs launched during the period
    new_sku_hype: float = 2.5  # their popularity multiplier at launch (decays)
    new_sku_wave: float = 0.3  # share of new SKUs launched around the split (see build_catalog)

    def __post_init__(self):
        # n_relevant may be 0 here: a block of other clients only (the generator wants at least 1 in all)
        if self.n_relevant < 0 or self.n_other < 0:
            raise UbpError(f"params.yaml data.synthetic: n_relevant and n_other must not be negative, "
                           f"got {self.n_relevant} and {self.n_other}")
        if self.block_clients is not None and self.block_clients < 1:
            raise UbpError(f"params.yaml data.synthetic.block_clients: expected a positive integer or null, "
                           f"got {self.block_clients!r}")


TINY = {"n_relevant": 600, "n_other": 2_400, "n_skus": 4_000, "n_categories": 120, "n_urls": 3_000, "relevant_rate": 0.2}


def synthetic_config(values: Mapping | None = None) -> SyntheticConfig:
    """params.yaml's `data.synthetic` mapping as a SyntheticConfig: its defaults, then the `scale`
    preset, then every key the user set. An unknown key or a wrong type is refused naming it."""
    cfg = build(SyntheticConfig, values, "data.synthetic")
    if cfg.scale is None:
        return cfg
    return build(SyntheticConfig, {**preset(cfg.scale), **(values or {})}, "data.synthetic")


@dataclass(frozen=True)
class DataConfig:
    """params.yaml's `data:` section: where the raw data comes from (`source`), where it lies
    (`raw_dir`, the ingest stage's input) and the generator's settings (`synthetic`)."""
    source: Literal["synthetic", "dir"] = "synthetic"  # dir: the user's data in raw_dir; nothing is generated
    raw_dir: str = str(S.SYNTHETIC_DIR)
    synthetic: SyntheticConfig = SyntheticConfig()
    timestamps: TimestampsConfig = TimestampsConfig()  # the ingest stage's plausible range (ubp.data.timestamps)

    @classmethod
    def from_params(cls, params: Mapping, synthetic_overrides: Mapping | None = None) -> "DataConfig":
        """`data:` of params.yaml (absent: the defaults); `synthetic_overrides` (e.g. TINY) win over
        data.synthetic's keys."""
        own = params.get("data") or {}
        if not isinstance(own, Mapping):
            raise UbpError(f"params.yaml: data must be a mapping, got {own!r}")
        own = dict(own)
        synthetic = own.pop("synthetic", None)
        if synthetic is not None and not isinstance(synthetic, Mapping):
            raise UbpError(f"params.yaml: data.synthetic must be a mapping, got {synthetic!r}")
        cfg = build(cls, own, "data")
        synthetic = synthetic_config({**(synthetic or {}), **(synthetic_overrides or {})})
        return dataclasses.replace(cfg, synthetic=synthetic)


def plan_blocks(cfg: SyntheticConfig) -> list[tuple[int, int]]:
    """(relevant, other) clients of each block: relevant clients first, blocks of about block_clients."""
    n_rel, n_other, size = cfg.n_relevant, cfg.n_other, cfg.block_clients
    if size is None:
        return [(n_rel, n_other)]
    out = []
    for n, relevant in ((n_rel, True), (n_other, False)):
        k = -(-n // size)
        for part in np.diff(np.linspace(0, n, k + 1).round().astype(int)) if k else []:
            out.append((int(part), 0) if relevant else (0, int(part)))
    return out


def block_rng(rng: np.random.Generator, cfg: SyntheticConfig, b: int) -> np.random.Generator:
    """The main stream for a one-block dataset, else block b's own (independent of the others)."""
    if cfg.block_clients is None:
        return rng
    return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(b,)))


def _relevant_traits(rng, cfg: SyntheticConfig, cat, b: int, ids: np.ndarray):
    """Block b's relevant clients again: traits are the first draws of the block's own stream."""
    return build_clients(block_rng(rng, cfg, b), dataclasses.replace(cfg, n_relevant=len(ids), n_other=0), cat, ids=ids)


def generate(out_dir: Path, cfg: SyntheticConfig) -> None:
    """Write a raw-layout dataset plus oracle/ into `out_dir` (atomically, whole directory)."""
    if cfg.n_relevant < 1:
        raise UbpError(f"params.yaml data.synthetic: n_relevant must be at least 1, got {cfg.n_relevant}")
    t0, rng = time.perf_counter(), np.random.default_rng(cfg.seed)
    start = np.datetime64(cfg.start_date, "D")
    cat = build_catalog(rng, cfg)
    blocks = plan_blocks(cfg)
    n_clients = cfg.n_relevant + cfg.n_other
    ids = unique_ids(rng, n_clients, CLIENT_ID_HIGH) if cfg.block_clients is not None else None
    log.info("catalogue: %d SKUs, %d categories; %d clients in %d blocks", len(cat.sku_id), len(cat.cat_id), n_clients, len(blocks))

    purchases, relevant, first = Purchases(len(cat.sku_id)), [], 0  # relevant: (block, its relevant clients or None)
    with atomic_dir(out_dir) as tmp:
        writer = EventWriter(tmp)
        for b, (n_rel, n_other) in enumerate(tqdm(blocks, desc="generate", unit="block", disable=None)):
            r = block_rng(rng, cfg, b)
            block_ids = None if ids is None else ids[first : first + n_rel + n_other]
            cl = build_clients(r, dataclasses.replace(cfg, n_relevant=n_rel, n_other=n_other), cat, ids=block_ids)
            first += n_rel + n_other
            events = sample_block(r, cfg, cat, cl)
            purchases.add(events)
            writer.add(block_tables(r, events, cl.ids, cat, start))
            if len(blocks) >= 10 and (b + 1) % (len(blocks) // 10) == 0:  # a log without a terminal sees it move
                log.info("block %d of %d: %d clients, %d events so far, %.0f s", b + 1, len(blocks), first,
                         sum(writer.rows.values()), time.perf_counter() - t0)
            if n_rel:  # a block's own stream redraws its traits for the oracle: keep only one-block populations
                relevant.append((b, cl.take(np.arange(n_rel)) if cfg.block_clients is None else None, cl.ids[:n_rel]))
        writer.close()
        log.info("events: %s", ", ".join(f"{k} {v}" for k, v in writer.rows.items()))
        if writer.rows[S.PRODUCT_BUY] == 0:
            raise UbpError("synthetic data has no purchases: raise n_relevant or relevant_rate")

        props = {S.SKU: cat.sku_id, S.CATEGORY: cat.cat_id[cat.sku_cat], S.PRICE: cat.sku_price, S.NAME: format_vectors(rng, cat.sku_name)}
        pq.write_table(shuffled_table(rng, props), tmp / f"{S.PROPERTIES}.parquet", compression="snappy")
        relevant_ids = np.concatenate([block_ids for _, _, block_ids in relevant])
        save_npy(tmp / S.RELEVANT_CLIENTS_FILE, relevant_ids[rng.permutation(len(relevant_ids))])

        end = int(purchases.buys()[1].max())
        t_split = (end - S.TARGET_OFFSET_DAYS * DAY) // DAY * DAY
        cat_cols, sku_cols, unseen = oracle_columns(cat, purchases, t_split)
        oracle = tmp / S.ORACLE_SUBDIR
        oracle.mkdir()
        save_npy(oracle / "client_ids.npy", relevant_ids)
        traits = (cl if cl is not None else _relevant_traits(rng, cfg, cat, b, ids) for b, cl, ids in relevant)
        columns = write_oracle_state(oracle / "state.npy", traits, len(relevant_ids), cat, t_split / DAY, cat_cols,
                                     sku_cols, day_weights(cfg), unseen)
        save_json(oracle / "columns.json", columns)
        log.info("oracle: %d columns at %s", len(columns), start + np.timedelta64(t_split, "s"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ubp generate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=S.SYNTHETIC_DIR, help="output directory (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="use the TINY preset (tests, quick looks)")
    args = parser.parse_args(argv)
    data = DataConfig.from_params(load_params(), TINY if args.tiny else None)  # a typo stops here
    if data.source == "dir":
        with atomic_dir(args.out) as tmp:
            save_text(
                tmp / "SKIPPED.txt",
                f"data.source is 'dir': the pipeline reads the user's data from {data.raw_dir!r};\n"
                "no synthetic data was generated.\n",
            )
        log.info("data.source is 'dir' (%s): wrote only %s/SKIPPED.txt", data.raw_dir, args.out)
        return 0
    t0 = time.perf_counter()
    generate(args.out, data.synthetic)
    log.info("generated %s in %.1f s", args.out, time.perf_counter() - t0)
    return 0
