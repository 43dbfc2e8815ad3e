"""The `sequences` stage: each relevant client's input events as one chronological sequence (SPEC §9.6).

    python -m ubp sequences

Every client's events of all five types are merged and ordered by time; the last `max_len` are
kept (left-aligned, zero-padded) and each event becomes a fixed-width row of integer ids, one per
field of `FIELDS`:

* `event_type`: 1..5 in `schema.EVENT_TYPES` order;
* `category`, `sku`, `url`: the top-`top_k` most frequent values among all clients' events before
  the cutoff (rank 0 -> id 3), `RARE` for any other value, `MISSING` where the field does not apply
  (a page visit has no sku, a purchase no url, a search neither);
* `price`: the bucket + 2 (`MISSING` for visits and searches);
* `day`, `week`: whole days (weeks) from the event to the cutoff, + 1, capped at `max_days`
  (relative to the cutoff, so a profile "as of" another date sees the same kind of input);
* `gap`: the bucket of the time since the client's previous event (`GAP_EDGES_SECONDS`), `MISSING`
  for the client's first event (the previous event counts even when truncation dropped it);
* `code0`..`code15`: the 16 quantized name (product events) or query (searches) codes + 2.

Id 0 (`PAD`) is padding in every field, so each field's vocabulary size is its largest id + 1
(`Sequences.sizes`). Ties in time are broken by event type, then sku/url, then codes, so the
order is total and the stage deterministic. Built out of core in DuckDB, a chunk of clients at a
time, into memory-mapped `.npy` files: `client_ids.npy` (int64, relevant-clients order),
`lengths.npy` (int32), `tokens.npy` (int16, clients x max_len x fields) and `vocab.json`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from ubp import schema
from ubp.db import check_size, connect, sql_text
from ubp.io import UbpError, atomic_dir, load_json, load_npy
from ubp.params import load_params, section_config

log = logging.getLogger("ubp.sequences")

PAD, MISSING, RARE = 0, 1, 2
FIRST_VALUE = 3  # id of the most frequent value of a top-k field
N_CODES = schema.VECTOR_DIM
CODE_FIELDS = tuple(f"code{i}" for i in range(N_CODES))
FIELDS = ("event_type", "category", "price", "sku", "url", "day", "week", "gap") + CODE_FIELDS
TOP_K_FIELDS = ("category", "sku", "url")
GAP_EDGES_SECONDS = (1, 10, 60, 300, 1800, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400)
TOKENS_FILE, LENGTHS_FILE, IDS_FILE, VOCAB_FILE = "tokens.npy", "lengths.npy", "client_ids.npy", "vocab.json"


@dataclass(frozen=True)
class SequencesConfig:
    """params.yaml's `sequences:` section, the only home of its defaults (`SequencesConfig.from_params`)."""
    max_len: int = 128  # events kept per client (the last ones)
    top_k: int = 5000  # values of each top-k field with their own id
    max_days: int = 180  # cap of the day/week fields
    chunk_clients: int = 200_000  # clients built at once (bounds the memory)
    threads: int = 2  # DuckDB threads
    memory_limit: str | None = None  # DuckDB's memory bound (ubp.db.connect)
    temp_directory: str | None = None  # where DuckDB spills

    def __post_init__(self):
        for key in ("max_len", "top_k", "max_days", "chunk_clients"):
            if getattr(self, key) <= 0:
                raise UbpError(f"params.yaml: sequences.{key} must be a positive integer, got {getattr(self, key)!r}")
        if self.top_k > np.iinfo(np.int16).max - FIRST_VALUE:
            raise UbpError(f"params.yaml: sequences.top_k must be below {np.iinfo(np.int16).max - FIRST_VALUE} "
                           "(int16 ids)")
        if self.threads < 1:
            raise UbpError(f"params.yaml: sequences.threads must be a whole number >= 1, got {self.threads}")
        if self.memory_limit is not None:
            check_size(self.memory_limit, "params.yaml: sequences.memory_limit")

    @classmethod
    def from_params(cls, params: Mapping) -> "SequencesConfig":
        return section_config(params, cls, "sequences")

    @property
    def recorded(self) -> dict:
        """The settings vocab.json records: those that decide the tokens (a stored output must match them)."""
        return {"max_len": self.max_len, "top_k": self.top_k, "max_days": self.max_days}


@dataclass(frozen=True)
class Sequences:
    client_ids: np.ndarray  # int64
    tokens: np.ndarray  # int16 (clients, max_len, len(FIELDS)); rows of events left-aligned, PAD after
    lengths: np.ndarray  # int32: events kept per client (0 for a client with no input events)
    sizes: dict  # field -> vocabulary size (largest id + 1)
    vocab: dict  # the whole vocab.json: settings, cutoff, top values per field

    @property
    def max_len(self) -> int:
        return int(self.tokens.shape[1])

    def column(self, field: str) -> int:
        return FIELDS.index(field)


def field_sizes(s: SequencesConfig, top: dict) -> dict:
    sizes = {"event_type": len(schema.EVENT_TYPES) + 1, "price": schema.N_PRICE_BUCKETS + 2,
             "day": s.max_days + 2, "week": s.max_days // 7 + 2, "gap": len(GAP_EDGES_SECONDS) + 3}
    sizes.update({f: FIRST_VALUE + len(top[f]) for f in TOP_K_FIELDS})
    sizes.update({c: 256 + 2 for c in CODE_FIELDS})
    return {f: int(sizes[f]) for f in FIELDS}


def gap_ids(seconds: np.ndarray) -> np.ndarray:
    """Time since the previous event (-1: none) -> gap field ids: MISSING, or 2 + bucket of GAP_EDGES_SECONDS."""
    bucket = np.searchsorted(np.asarray(GAP_EDGES_SECONDS), seconds, side="right")
    return np.where(seconds < 0, MISSING, 2 + bucket)



def _views(con, events_dir: Path, properties_path: Path, cutoff: datetime) -> None:
    """`ev_all`: every event before the cutoff, all types, with its payload; `props`."""
    for path in [Path(events_dir) / f"{e}.parquet" for e in schema.EVENT_TYPES] + [Path(properties_path)]:
        if not path.is_file():
            raise UbpError(f"{path}: file not found")
    cut = f"TIMESTAMP {sql_text(cutoff.strftime(schema.TIMESTAMP_FORMAT))}"
    con.execute(f"CREATE OR REPLACE TEMP VIEW props AS SELECT * FROM read_parquet({sql_text(properties_path)})")
    parts = []
    for number, event in enumerate(schema.EVENT_TYPES, start=1):
        src = f"read_parquet({sql_text(Path(events_dir) / f'{event}.parquet')})"
        if event in schema.PRODUCT_EVENTS:
            parts.append(f"SELECT e.client_id, e.timestamp AS ts, {number} AS etype, e.sku, NULL::BIGINT AS url, "
                         f"p.category, p.price, p.name AS codes FROM {src} e LEFT JOIN props p ON e.sku = p.sku "
                         f"WHERE e.timestamp < {cut}")
        elif event == schema.PAGE_VISIT:
            parts.append(f"SELECT client_id, timestamp AS ts, {number} AS etype, NULL::BIGINT AS sku, url, "
                         f"NULL::BIGINT AS category, NULL::BIGINT AS price, NULL::UTINYINT[{N_CODES}] AS codes "
                         f"FROM {src} WHERE timestamp < {cut}")
        else:
            parts.append(f"SELECT client_id, timestamp AS ts, {number} AS etype, NULL::BIGINT AS sku, NULL::BIGINT AS url, "
                         f"NULL::BIGINT AS category, NULL::BIGINT AS price, query AS codes FROM {src} WHERE timestamp < {cut}")
    con.execute("CREATE OR REPLACE TEMP VIEW ev_all AS " + " UNION ALL ".join(parts))


def _top_values(con, field: str, k: int) -> np.ndarray:
    """The k most frequent values of a field over all clients' events (ties: smaller id first)."""
    rows = con.execute(f"SELECT {field} FROM ev_all WHERE {field} IS NOT NULL GROUP BY {field} "
                       f"ORDER BY count(*) DESC, {field} LIMIT {int(k)}").fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


def _chunk_query(s: SequencesConfig, cutoff: datetime) -> str:
    cut = f"TIMESTAMP {sql_text(cutoff.strftime(schema.TIMESTAMP_FORMAT))}"
    vocab = [f"LEFT JOIN top_{f} t_{f} ON e.{f} = t_{f}.value" for f in TOP_K_FIELDS]
    tok = {f: f"CASE WHEN e.{f} IS NULL THEN {MISSING} ELSE coalesce(t_{f}.rank + {FIRST_VALUE}, {RARE}) END"
           for f in TOP_K_FIELDS}
    codes = ", ".join(f"CASE WHEN codes IS NULL THEN {MISSING} ELSE codes[{i + 1}]::INTEGER + 2 END AS code{i}" for i in range(N_CODES))
    return f"""
    WITH e AS (
        SELECT ev.*, c.row,
               row_number() OVER w AS k, count(*) OVER (PARTITION BY ev.client_id) AS n,
               lag(ts) OVER w AS prev_ts
        FROM ev_all ev JOIN chunk c ON ev.client_id = c.client_id
        WINDOW w AS (PARTITION BY ev.client_id ORDER BY ts, etype, coalesce(sku, url, -1), codes)
    ), kept AS (
        SELECT e.*, date_diff('second', ts, {cut}) AS age, {tok['category']} AS category_t,
               {tok['sku']} AS sku_t, {tok['url']} AS url_t
        FROM e {' '.join(vocab)}
        WHERE k > n - {s.max_len}
    )
    SELECT row, (k - greatest(n - {s.max_len}, 0) - 1)::INTEGER AS pos, etype AS event_type,
           category_t AS category, CASE WHEN price IS NULL THEN {MISSING} ELSE price + 2 END AS price,
           sku_t AS sku, url_t AS url,
           least(age // 86400, {s.max_days}) + 1 AS day,
           least(age // 86400, {s.max_days}) // 7 + 1 AS week,
           coalesce(date_diff('second', prev_ts, ts), -1) AS gap_seconds,
           {codes}
    FROM kept
    """


def build_sequences(events_dir: Path, properties_path: Path, client_ids: np.ndarray, cutoff: datetime,
                    out_dir: Path, s: SequencesConfig = SequencesConfig(), progress: bool = False) -> dict:
    """Write the sequence files of `client_ids` (in that order) as of `cutoff` into `out_dir` (which
    must exist); returns vocab.json's content."""
    ids = np.asarray(client_ids, dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise UbpError("sequences: duplicate client ids among the clients to build")
    out_dir = Path(out_dir)
    with connect(threads=s.threads, memory_limit=s.memory_limit, temp_directory=s.temp_directory,
                 where="sequences.memory_limit") as con:
        _views(con, events_dir, properties_path, cutoff)
        top = {f: _top_values(con, f, s.top_k) for f in TOP_K_FIELDS}
        for f, values in top.items():
            con.register(f"top_arrow_{f}", pa.table({"value": values, "rank": np.arange(len(values), dtype=np.int64)}))
            con.execute(f"CREATE OR REPLACE TEMP TABLE top_{f} AS SELECT * FROM top_arrow_{f}")
        tokens = np.lib.format.open_memmap(out_dir / TOKENS_FILE, mode="w+", dtype=np.int16,
                                           shape=(len(ids), s.max_len, len(FIELDS)))
        lengths = np.zeros(len(ids), dtype=np.int32)
        query = _chunk_query(s, cutoff)
        starts = range(0, len(ids), s.chunk_clients)
        for start in tqdm(starts, desc="sequences", unit="chunk", disable=not progress or len(starts) < 2):
            chunk = pa.table({"client_id": ids[start:start + s.chunk_clients],
                              "row": np.arange(start, min(start + s.chunk_clients, len(ids)), dtype=np.int64)})
            con.register("chunk_arrow", chunk)
            con.execute("CREATE OR REPLACE TEMP TABLE chunk AS SELECT * FROM chunk_arrow")
            got = con.execute(query).fetchnumpy()
            rows, pos = got["row"].astype(np.int64), got["pos"].astype(np.int64)
            got["gap"] = gap_ids(np.asarray(got["gap_seconds"], dtype=np.int64))
            block = np.stack([np.asarray(got[f]).astype(np.int16) for f in FIELDS], axis=1)  # ids fit int16 (settings)
            tokens[rows, pos] = block
            np.maximum.at(lengths, rows, (pos + 1).astype(np.int32))
        tokens.flush()
        del tokens
    vocab = {"cutoff": cutoff.strftime(schema.TIMESTAMP_FORMAT), "settings": s.recorded,
             "fields": list(FIELDS), "sizes": field_sizes(s, top), "gap_edges_seconds": list(GAP_EDGES_SECONDS),
             "top": {f: top[f].tolist() for f in TOP_K_FIELDS}}
    np.save(out_dir / IDS_FILE, ids)
    np.save(out_dir / LENGTHS_FILE, lengths)
    (out_dir / VOCAB_FILE).write_text(json.dumps(vocab) + "\n")
    return vocab


def load_sequences(seq_dir: Path, client_ids: np.ndarray | None = None) -> Sequences:
    """The stage's output (tokens memory-mapped, never read whole), rows reordered to `client_ids` when given."""
    seq_dir = Path(seq_dir)
    vocab = load_json(seq_dir / VOCAB_FILE)
    if tuple(vocab.get("fields", ())) != FIELDS:
        raise UbpError(f"{seq_dir / VOCAB_FILE}: fields {vocab.get('fields')} are not this version's {list(FIELDS)} "
                       "(re-run `python -m ubp sequences`)")
    ids = load_npy(seq_dir / IDS_FILE)
    tokens = np.load(seq_dir / TOKENS_FILE, mmap_mode="r")
    lengths = load_npy(seq_dir / LENGTHS_FILE)
    if tokens.shape[0] != len(ids) or len(lengths) != len(ids):
        raise UbpError(f"{seq_dir}: {len(ids)} ids, {tokens.shape[0]} token rows, {len(lengths)} lengths")
    if client_ids is not None:
        wanted = np.asarray(client_ids, dtype=np.int64)
        if not np.array_equal(ids, wanted):
            if len(ids) != len(wanted) or not np.array_equal(np.sort(ids), np.sort(wanted)):
                raise UbpError(f"{seq_dir}: its {len(ids)} client ids are not the {len(wanted)} requested "
                               "(re-run `python -m ubp sequences`)")
            order = np.argsort(ids)[np.searchsorted(ids, wanted, sorter=np.argsort(ids))]
            ids, tokens, lengths = wanted, _reordered(tokens, order), lengths[order]
    return Sequences(ids, tokens, lengths, {f: int(vocab["sizes"][f]) for f in FIELDS}, vocab)


def _reordered(tokens: np.ndarray, order: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """tokens[order] as a memory map in a temporary file, copied a chunk of rows at a time."""
    tmp = tempfile.TemporaryDirectory(prefix="ubp-seq-order-")
    out = np.lib.format.open_memmap(Path(tmp.name) / TOKENS_FILE, mode="w+", dtype=tokens.dtype, shape=tokens.shape)
    for start in range(0, len(order), chunk):
        out[start:start + chunk] = tokens[order[start:start + chunk]]
    out.flush()
    return _kept_until_unused(np.load(Path(tmp.name) / TOKENS_FILE, mmap_mode="r"), tmp)


def _kept_until_unused(tokens: np.ndarray, tmp: tempfile.TemporaryDirectory) -> np.ndarray:
    """The memory map `tokens`, whose temporary directory is removed once nothing uses it any more
    (views keep the map alive through their base), instead of copying it into memory first."""
    weakref.finalize(tokens, tmp.cleanup)
    return tokens


def load_or_build(ctx) -> Sequences:
    """Sequences of ctx.client_ids as of ctx.cutoff: the stage's output (ctx.sequences_dir) when it was
    built for the same cutoff and settings (ctx.sequence_settings), else built now (e.g. from all
    events for a competition entry, or as of a shifted cutoff) into a temporary directory that
    lives as long as the returned tokens."""
    s = ctx.sequence_settings
    stored = getattr(ctx, "sequences_dir", None)
    if stored is not None and (Path(stored) / VOCAB_FILE).is_file():
        vocab = load_json(Path(stored) / VOCAB_FILE)
        same = vocab.get("cutoff") == ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT) and \
            vocab.get("settings") == s.recorded
        if same:
            return load_sequences(stored, ctx.client_ids)
        log.warning("%s was built for another cutoff or settings: building the sequences again", stored)
    tmp = tempfile.TemporaryDirectory(prefix="ubp-seq-")
    build_sequences(ctx.events_dir, ctx.properties_path, ctx.client_ids, ctx.cutoff, Path(tmp.name), s)
    seqs = load_sequences(tmp.name)
    return dataclasses.replace(seqs, tokens=_kept_until_unused(seqs.tokens, tmp))


def run(cfg: SequencesConfig, split_dir: Path = schema.SPLIT_DIR, canonical_dir: Path = schema.CANONICAL_DIR,
        out_dir: Path = schema.SEQUENCES_DIR) -> dict:
    split = load_json(Path(split_dir) / schema.SPLIT_FILE)
    cutoff = datetime.strptime(split["train_target_start"], schema.TIMESTAMP_FORMAT)
    client_ids = load_npy(Path(canonical_dir) / schema.RELEVANT_CLIENTS_FILE).astype(np.int64)
    start = time.time()
    with atomic_dir(out_dir) as tmp:
        vocab = build_sequences(Path(split_dir) / "input", Path(canonical_dir) / f"{schema.PROPERTIES}.parquet",
                                client_ids, cutoff, tmp, cfg, progress=True)
        lengths = np.load(tmp / LENGTHS_FILE)
    log.info("sequences: %d clients, max_len %d, mean length %.1f, %.0f%% truncated, %d empty, in %.1f s -> %s",
             len(client_ids), vocab["settings"]["max_len"], lengths.mean() if len(lengths) else 0,
             100 * (lengths == vocab["settings"]["max_len"]).mean() if len(lengths) else 0,
             int((lengths == 0).sum()), time.time() - start, out_dir)
    return vocab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ubp sequences", description=__doc__.splitlines()[0])
    parser.add_argument("--split-dir", type=Path, default=schema.SPLIT_DIR)
    parser.add_argument("--canonical-dir", type=Path, default=schema.CANONICAL_DIR)
    parser.add_argument("--out-dir", type=Path, default=schema.SEQUENCES_DIR)
    args = parser.parse_args(argv)
    cfg = SequencesConfig.from_params(load_params())  # a typo stops here, before any work
    run(cfg, args.split_dir, args.canonical_dir, args.out_dir)
    return 0
