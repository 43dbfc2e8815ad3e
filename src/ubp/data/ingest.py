"""Ingest stage: validate a raw data directory (SPEC §2) and write its canonical, typed copy.

Canonical form: the same file names; `client_id`/`sku`/`url`/`category`/`price` int64, `timestamp`
a TIMESTAMP (no time zone), `query`/`name` a list of 16 uint8; `input/relevant_clients.npy` int64;
`target/*.npy` copied byte for byte. Every check runs as one DuckDB aggregate per file, so the
156M-row `page_visit` is scanned, never loaded into memory; rows keep their order.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np

from ubp import db
from ubp.db import sql_text, timestamp_sql
from ubp import schema as S
from ubp.data.timestamps import DROPPED_FILE, TimestampsConfig, plausible_range
from ubp.io import UbpError, atomic_dir, load_int_npy, save_json
from ubp.params import PARAMS_FILE, load_params

log = logging.getLogger("ubp.ingest")

INT, TIMESTAMP_KIND, VECTOR = "int", "timestamp", "vector"
FILE_COLUMNS = {
    **{event: ((S.CLIENT_ID, INT), (S.TIMESTAMP, TIMESTAMP_KIND), (S.SKU, INT)) for event in S.PRODUCT_EVENTS},
    S.PAGE_VISIT: ((S.CLIENT_ID, INT), (S.TIMESTAMP, TIMESTAMP_KIND), (S.URL, INT)),
    S.SEARCH_QUERY: ((S.CLIENT_ID, INT), (S.TIMESTAMP, TIMESTAMP_KIND), (S.QUERY, VECTOR)),
    S.PROPERTIES: ((S.SKU, INT), (S.CATEGORY, INT), (S.PRICE, INT), (S.NAME, VECTOR)),
}
CANONICAL_TYPES = {INT: "int64", TIMESTAMP_KIND: "TIMESTAMP", VECTOR: f"UTINYINT[{S.VECTOR_DIM}]"}

INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
             "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
FLOAT_TYPES = {"FLOAT", "DOUBLE"}
NAIVE_TIMESTAMP_TYPES = {"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"}
SQL_TIMESTAMP_FORMAT = S.TIMESTAMP_FORMAT  # DuckDB's strptime uses the same codes
DIGITS = r"[0-9]+"
VECTOR_TEXT = r"\s*\[[\s0-9,]*\]\s*"  # brackets around digits, separated by whitespace (or commas)
VECTOR_PROBLEM = f"not a vector of {S.VECTOR_DIM} integers in 0..255"


@contextlib.contextmanager
def connect(memory_limit: str | None = None, temp_directory: str | Path | None = None
            ) -> Iterator[duckdb.DuckDBPyConnection]:
    """ubp.db.connect keeping row order (the data stages' outputs keep their inputs' row order)."""
    with db.connect(memory_limit=memory_limit, temp_directory=temp_directory, preserve_order=True,
                    where="features.memory_limit") as con:
        yield con


def resource_settings(params_file: Path = PARAMS_FILE) -> dict:
    """memory_limit / temp_directory for the data stages' DuckDB, from params.yaml's `features:`
    section (the one place for them; no params file: DuckDB's defaults). They change no output, so
    no stage depends on them (dvc.yaml lists the features stage's other keys, not these). The whole
    section is checked: a typo in it stops the stage before any work."""
    from ubp.features.sources import FeaturesConfig

    return FeaturesConfig.from_params(load_params(params_file)).resources if Path(params_file).exists() else {}



def quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def scan(path: Path, row_numbers: bool = False) -> str:
    """A FROM-clause reading one parquet file; `file_row_number` is the 0-based row in the file."""
    return f"read_parquet({sql_text(path)}{', file_row_number=true' if row_numbers else ''})"


def count_rows(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    return con.execute(f"SELECT count(*) FROM {scan(path)}").fetchone()[0]


def column_types(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, str]:
    if not path.is_file():
        raise UbpError(f"{path}: file not found")
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {scan(path)}").fetchall()
    except duckdb.Error as exc:
        raise UbpError(f"{path}: not a readable parquet file ({exc})") from None
    return {name: str(typ) for name, typ, *_ in rows}


def column_plan(path: Path, column: str, kind: str, typ: str) -> tuple[list[tuple[str, str]], str]:
    """(checks, canonical expression) for one column of source type `typ`.

    Each check is (problem, SQL condition that is true on a bad row); the canonical expression is
    only evaluated once every check has passed, so it may use plain CASTs."""
    checks, expression = value_plan(path, column, kind, typ)
    q = quote(column)
    return [("NULL value", f"{q} IS NULL")] + [(p, f"{q} IS NOT NULL AND ({c})") for p, c in checks], expression


def value_plan(path: Path, column: str, kind: str, typ: str) -> tuple[list[tuple[str, str]], str]:
    q = quote(column)
    checks = []
    wrong = UbpError(f"{path}: column '{column}' has dtype {typ}, expected {CANONICAL_TYPES[kind]}"
                     + (" or a 'YYYY-MM-DD HH:MM:SS' string" if kind == TIMESTAMP_KIND else "")
                     + (" or a string like '[12 250 3 ...]'" if kind == VECTOR else ""))
    if kind == INT:
        if typ in FLOAT_TYPES or typ.startswith("DECIMAL"):
            as_double = f"CAST({q} AS DOUBLE)"
            checks += [("NaN", f"isnan({as_double})"), ("infinite value", f"isinf({as_double})"),
                       ("not a whole number", f"{as_double} <> round({as_double})")]
        elif typ not in INT_TYPES:
            raise wrong
        checks.append(("value outside the int64 range", f"TRY_CAST({q} AS BIGINT) IS NULL"))
        if column == S.PRICE:
            checks.append((f"price bucket outside 0..{S.N_PRICE_BUCKETS - 1}",
                           f"TRY_CAST({q} AS DOUBLE) NOT BETWEEN 0 AND {S.N_PRICE_BUCKETS - 1}"))
        return checks, f"CAST({q} AS BIGINT)"
    if kind == TIMESTAMP_KIND:
        if typ == "VARCHAR":
            fmt = sql_text(SQL_TIMESTAMP_FORMAT)
            checks.append(("unparseable timestamp (expected 'YYYY-MM-DD HH:MM:SS')",
                           f"try_strptime({q}, {fmt}) IS NULL"))
            return checks, f"strptime({q}, {fmt})"
        if typ not in NAIVE_TIMESTAMP_TYPES:
            raise wrong  # including TIMESTAMP WITH TIME ZONE: local times are expected, no guessing
        checks.append(("infinite timestamp", f"isinf(CAST({q} AS TIMESTAMP))"))
        return checks, f"CAST({q} AS TIMESTAMP)"
    # VECTOR
    if typ == "VARCHAR":
        numbers = f"regexp_extract_all({q}, {sql_text(DIGITS)})"
        checks += [
            (f"{VECTOR_PROBLEM} (unexpected characters)", f"NOT regexp_full_match({q}, {sql_text(VECTOR_TEXT)})"),
            (f"{VECTOR_PROBLEM} (wrong count)", f"len({numbers}) <> {S.VECTOR_DIM}"),
            (f"{VECTOR_PROBLEM} (value > 255)",
             f"len(list_filter({numbers}, lambda x: coalesce(TRY_CAST(x AS BIGINT) > 255, true))) > 0"),
        ]
        return checks, (f"CAST(list_transform({numbers}, lambda x: CAST(x AS UTINYINT))"
                        f" AS UTINYINT[{S.VECTOR_DIM}])")
    element = typ.rsplit("[", 1)[0] if typ.endswith("]") else None
    if element not in INT_TYPES:
        raise wrong
    as_list = f"CAST({q} AS {element}[])"
    checks += [
        (f"{VECTOR_PROBLEM} (wrong count)", f"len({as_list}) <> {S.VECTOR_DIM}"),
        (f"{VECTOR_PROBLEM} (NULL element)", f"list_count({as_list}) <> len({as_list})"),
        (f"{VECTOR_PROBLEM} (value outside 0..255)", f"list_min({as_list}) < 0 OR list_max({as_list}) > 255"),
    ]
    return checks, f"CAST({as_list} AS UTINYINT[{S.VECTOR_DIM}])"


def value_at(con: duckdb.DuckDBPyConnection, path: Path, column: str, row: int) -> str:
    try:
        value = con.execute(f"SELECT CAST({quote(column)} AS VARCHAR) FROM {scan(path, True)} "
                            f"WHERE file_row_number = ?", [int(row)]).fetchone()[0]
    except duckdb.Error:
        return "?"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def first_bad_row(con, path: Path, checks: list[tuple[str, str, str]]) -> tuple[int, str, str] | None:
    """(row, column, problem) of the earliest row failing any check (ties: check order), or None."""
    if not checks:
        return None
    firsts = ", ".join(f"min(file_row_number) FILTER (WHERE {cond})" for _, _, cond in checks)
    try:
        rows = con.execute(f"SELECT {firsts} FROM {scan(path, True)}").fetchone()
    except duckdb.Error as exc:
        raise UbpError(f"{path}: could not be validated ({exc})") from None
    hits = [(row, i) for i, row in enumerate(rows) if row is not None]
    if not hits:
        return None
    row, i = min(hits)
    return row, checks[i][0], checks[i][1]


def raise_bad_row(con, path: Path, row: int, column: str, problem: str, shown: Path | None = None) -> None:
    value = value_at(con, path, column, row)
    shown_value = "" if value == "None" else f" (value {value})"
    raise UbpError(f"{shown or path}: column '{column}', row {row} (0-based): {problem}{shown_value}")


def ingest_table(con, raw_dir: Path, out_dir: Path, name: str) -> int:
    """Validate raw_dir/<name>.parquet and write out_dir/<name>.parquet; returns its row count."""
    path, out = raw_dir / f"{name}.parquet", out_dir / f"{name}.parquet"
    types = column_types(con, path)
    columns = FILE_COLUMNS[name]
    for column, _ in columns:
        if column not in types:
            raise UbpError(f"{path}: missing column '{column}' (found: {', '.join(types) or 'none'})")
    extra = [c for c in types if c not in dict(columns)]
    if extra:
        log.warning("%s: ignoring extra columns %s", path, ", ".join(extra))
    checks, select = [], []
    for column, kind in columns:
        column_checks, expression = column_plan(path, column, kind, types[column])
        checks += [(column, problem, cond) for problem, cond in column_checks]
        select.append(f"{expression} AS {quote(column)}")
    bad = first_bad_row(con, path, checks)
    if bad:
        raise_bad_row(con, path, *bad)
    try:
        db.write_parquet(con, f"SELECT {', '.join(select)} FROM {scan(path)}", out)
    except duckdb.Error as exc:  # every value was checked above; this is a bug or a full disk
        raise UbpError(f"{path}: could not be converted ({exc})") from None
    return count_rows(con, out)


def check_unique_skus(con, raw_dir: Path, out_dir: Path) -> None:
    out = out_dir / f"{S.PROPERTIES}.parquet"
    row = con.execute(
        f"SELECT min(file_row_number) FROM (SELECT file_row_number, row_number() OVER "
        f"(PARTITION BY {S.SKU} ORDER BY file_row_number) AS k FROM {scan(out, True)}) WHERE k > 1").fetchone()[0]
    if row is not None:
        raise_bad_row(con, out, row, S.SKU, "duplicate sku (each sku must appear once)",
                      shown=raw_dir / out.name)


def check_known_skus(con, raw_dir: Path, out_dir: Path, event: str) -> None:
    out, props = out_dir / f"{event}.parquet", out_dir / f"{S.PROPERTIES}.parquet"
    row = con.execute(
        f"SELECT min(e.file_row_number) FROM {scan(out, True)} e "
        f"WHERE NOT EXISTS (SELECT 1 FROM {scan(props)} p WHERE p.{S.SKU} = e.{S.SKU})").fetchone()[0]
    if row is not None:
        raise_bad_row(con, out, row, S.SKU, f"sku not found in {S.PROPERTIES}.parquet",
                      shown=raw_dir / out.name)


def check_id_array(path: Path, array: np.ndarray, what: str) -> np.ndarray:
    """A 1-D integer array as int64, or a UbpError naming the file."""
    if array.ndim != 1:
        raise UbpError(f"{path}: {what} must be a 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise UbpError(f"{path}: {what} must hold integers (int64), got dtype {array.dtype}")
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        raise UbpError(f"{path}: {what} has a value above the int64 range")
    return array.astype(np.int64)


def ingest_relevant_clients(raw_dir: Path, out_dir: Path) -> int:
    path = raw_dir / S.RELEVANT_CLIENTS_FILE
    clients = check_id_array(path, load_int_npy(path)[0], "relevant clients")
    if clients.size == 0:
        raise UbpError(f"{path}: no relevant clients")
    _, first = np.unique(clients, return_index=True)
    if first.size != clients.size:
        position = int(np.setdiff1d(np.arange(clients.size), first)[0])
        raise UbpError(f"{path}: duplicate client id {clients[position]} at position {position} (0-based)")
    out = out_dir / S.RELEVANT_CLIENTS_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, clients, allow_pickle=False)
    return clients.size


TARGET_FILES = {S.ACTIVE_CLIENTS_FILE} | {name(task) for task in S.PROPENSITY_TASKS
                                          for name in (S.label_file, S.popularity_file)}
RAW_NAMES = {f"{name}.parquet" for name in (*S.EVENT_TYPES, S.PROPERTIES)} | {
    "input", "target", S.ORACLE_SUBDIR}  # oracle/: the synthetic generator's latent states (the oracle profile's input)


def log_unnamed(raw_dir: Path) -> None:
    """One line per file the layout does not name (raw_dir, input/, target/): ignored, not fatal."""
    named = {raw_dir: RAW_NAMES, raw_dir / "input": {Path(S.RELEVANT_CLIENTS_FILE).name},
             raw_dir / "target": TARGET_FILES}
    for folder, names in named.items():
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            if entry.name not in names:
                log.warning("%s: not part of the data layout (SPEC §2), ignored", entry)


def copy_target_files(raw_dir: Path, out_dir: Path) -> list[str]:
    """Copy the layout's raw_dir/target/*.npy unchanged (object arrays of integers: as int64) after
    checking each is a 1-D integer array and that every propensity label file comes with an aligned
    popularity file."""
    target = raw_dir / "target"
    files = sorted(f for f in target.glob("*.npy") if f.name in TARGET_FILES) if target.is_dir() else []
    loaded = {f.name: load_int_npy(f) for f in files}
    lengths = {f.name: check_id_array(f, loaded[f.name][0], "a target file").size for f in files}
    for task in S.PROPENSITY_TASKS:
        labels, popularity = S.label_file(task), S.popularity_file(task)
        if (labels in lengths) != (popularity in lengths):
            have, missing = (labels, popularity) if labels in lengths else (popularity, labels)
            raise UbpError(f"{target / have}: found without its companion {target / missing}")
        if labels in lengths and lengths[labels] != lengths[popularity]:
            raise UbpError(f"{target / popularity}: {lengths[popularity]} values, but {labels} has {lengths[labels]}")
    if files:
        (out_dir / "target").mkdir(parents=True, exist_ok=True)
    for f in files:
        array, was_object = loaded[f.name]
        if was_object:  # never pass a pickle on: the later stages load with allow_pickle=False
            np.save(out_dir / "target" / f.name, check_id_array(f, array, "a target file"), allow_pickle=False)
        else:
            shutil.copyfile(f, out_dir / "target" / f.name)
    return [f.name for f in files]


def day_counts(con, out_dir: Path) -> Counter:
    """Events per calendar day over the five canonical event files (a few hundred rows of output)."""
    counts: Counter = Counter()
    for event in S.EVENT_TYPES:
        counts.update(dict(con.execute(f"SELECT CAST({S.TIMESTAMP} AS DATE), count(*) FROM "
                                       f"{scan(out_dir / f'{event}.parquet')} GROUP BY 1").fetchall()))
    return counts


def check_timestamps(con, raw_dir: Path, out_dir: Path, cfg: TimestampsConfig, counts: dict) -> None:
    """Refuse (or, with cfg.drop, drop from the canonical copy) implausible timestamps: see
    ubp.data.timestamps. Runs before the split can see them, so no outlier moves its end date."""
    low, high = plausible_range(cfg, day_counts(con, out_dir))
    bad = f"{S.TIMESTAMP} < {timestamp_sql(low)}" + (f" OR {S.TIMESTAMP} >= {timestamp_sql(high)}" if high else "")
    rule = (f"implausible timestamp (plausible: from {low} to before {high}; data.timestamps: earliest "
            f"{cfg.earliest!r}, days_after_bulk {cfg.days_after_bulk}; set data.timestamps.drop: true to drop such rows)")
    dropped = {}
    for event in S.EVENT_TYPES:
        out = out_dir / f"{event}.parquet"
        n, first = con.execute(f"SELECT count(*), min(file_row_number) FROM {scan(out, True)} WHERE {bad}").fetchone()
        if n and not cfg.drop:
            raise_bad_row(con, out, first, S.TIMESTAMP, f"{rule}; {n} such row(s) in this file",
                          shown=raw_dir / out.name)
        dropped[event] = n
        if n:
            kept = out.with_name(f".{out.name}.kept")
            db.write_parquet(con, f"SELECT * FROM {scan(out)} WHERE NOT ({bad})", kept)
            os.replace(kept, out)
            counts[event] -= n
            log.warning("%s: dropped %d row(s) with an implausible timestamp", raw_dir / out.name, n)
    if cfg.drop:  # the report exists whenever dropping is on, so the output depends only on params and data
        save_json(out_dir / DROPPED_FILE, {"plausible_from": str(low), "plausible_before": str(high),
                                           "earliest": cfg.earliest, "days_after_bulk": cfg.days_after_bulk,
                                           "dropped_rows": dropped})


def ingest(raw_dir: Path, out_dir: Path = S.CANONICAL_DIR, memory_limit: str | None = None,
           temp_directory: str | Path | None = None, timestamps: TimestampsConfig = TimestampsConfig()) -> None:
    """Validate raw_dir (SPEC §2 layout) and write its canonical form to out_dir, atomically."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise UbpError(f"{raw_dir}: data directory not found")
    log_unnamed(raw_dir)
    with connect(memory_limit, temp_directory) as con:
        with atomic_dir(out_dir) as tmp:
            counts = {}
            for name in (S.PROPERTIES, *S.EVENT_TYPES):  # each logged as it is done: minutes at the real size
                began = time.perf_counter()
                counts[name] = ingest_table(con, raw_dir, tmp, name)
                if name == S.PROPERTIES:
                    check_unique_skus(con, raw_dir, tmp)
                elif name in S.PRODUCT_EVENTS:
                    check_known_skus(con, raw_dir, tmp, name)
                log.info("%s: %d rows checked and written (%.1f s)", name, counts[name], time.perf_counter() - began)
            if counts[S.PRODUCT_BUY] == 0:
                raise UbpError(f"{raw_dir / S.PRODUCT_BUY}.parquet: no rows (the split needs purchases)")
            began = time.perf_counter()
            check_timestamps(con, raw_dir, tmp, timestamps, counts)
            log.info("timestamps checked (%.1f s)", time.perf_counter() - began)
            if counts[S.PRODUCT_BUY] == 0:
                raise UbpError(f"{raw_dir / S.PRODUCT_BUY}.parquet: no rows left once implausible timestamps "
                               f"were dropped (the split needs purchases)")
            n_relevant = ingest_relevant_clients(raw_dir, tmp)
            targets = copy_target_files(raw_dir, tmp)
    log.info("relevant clients: %d", n_relevant)
    log.info("target files copied: %s", ", ".join(targets) or "none")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ubp ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", type=Path, help="override params.yaml data.raw_dir")
    parser.add_argument("--out-dir", type=Path, default=S.CANONICAL_DIR)
    args = parser.parse_args(argv)
    from ubp.data.synthetic import DataConfig  # data: is one section; the generator's module holds its Config
    from ubp.features.sources import FeaturesConfig

    params = load_params() if PARAMS_FILE.exists() or args.raw_dir is None else {}
    data, features = DataConfig.from_params(params), FeaturesConfig.from_params(params)  # a typo stops here
    raw_dir = args.raw_dir or Path(data.raw_dir)
    log.info("ingesting %s -> %s", raw_dir, args.out_dir)
    ingest(raw_dir, args.out_dir, **features.resources, timestamps=data.timestamps)
    return 0
