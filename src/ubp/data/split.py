"""Split stage (SPEC §3): input events before `train_target_start`, two 14-day purchase windows after.

Matches the official code to the second: end_date = latest purchase; train_target_start =
(end_date - 27 days) at 00:00:00; validation_target_start = +14 days; input = every event with
timestamp < train_target_start; train target = purchases in [train, validation start);
validation target = purchases in [validation start, end_date]. Rows keep their order.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path


from ubp import schema as S
from ubp.data.ingest import connect, count_rows, resource_settings, scan
from ubp.db import timestamp_sql, write_parquet
from ubp.io import UbpError, atomic_dir, load_json, save_json

log = logging.getLogger("ubp.split")

DAYS_IN_TARGET = 14
TARGET_COLUMNS = (S.CLIENT_ID, S.TIMESTAMP, S.SKU, S.CATEGORY, S.PRICE, S.NAME)


def split_dates(end_date: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    train_start = (end_date - dt.timedelta(days=S.TARGET_OFFSET_DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    return train_start, train_start + dt.timedelta(days=DAYS_IN_TARGET)


def write_target(con, canonical_dir: Path, out: Path, start: dt.datetime, end: dt.datetime, end_op: str) -> int:
    """Purchases with start <= timestamp `end_op` end, joined with their properties, in the original row order."""
    buys, props = canonical_dir / f"{S.PRODUCT_BUY}.parquet", canonical_dir / f"{S.PROPERTIES}.parquet"
    joined = (f"FROM {scan(buys, True)} b LEFT JOIN {scan(props)} p ON b.{S.SKU} = p.{S.SKU} "
              f"WHERE b.timestamp >= {timestamp_sql(start)} AND b.timestamp {end_op} {timestamp_sql(end)}")
    missing = con.execute(f"SELECT min(b.file_row_number) {joined} AND p.{S.SKU} IS NULL").fetchone()[0]
    if missing is not None:
        raise UbpError(f"{buys}: row {missing} (0-based): sku has no product properties (re-run ingest)")
    columns = ", ".join([f"b.{S.CLIENT_ID}", "b.timestamp", f"b.{S.SKU}", f"p.{S.CATEGORY}", f"p.{S.PRICE}", f"p.{S.NAME}"])
    write_parquet(con, f"SELECT {columns} {joined} ORDER BY b.file_row_number", out)
    return count_rows(con, out)


def split(canonical_dir: Path = S.CANONICAL_DIR, out_dir: Path = S.SPLIT_DIR, memory_limit: str | None = None,
          temp_directory: str | Path | None = None) -> dict:
    """Write input/<event>.parquet, train_target.parquet, validation_target.parquet and split.json."""
    canonical_dir, out_dir = Path(canonical_dir), Path(out_dir)
    for name in (*S.EVENT_TYPES, S.PROPERTIES):
        if not (canonical_dir / f"{name}.parquet").is_file():
            raise UbpError(f"{canonical_dir / name}.parquet: file not found (run `python -m ubp ingest` first)")
    with connect(memory_limit, temp_directory) as con:
        end_date = con.execute(f"SELECT max(timestamp) FROM {scan(canonical_dir / f'{S.PRODUCT_BUY}.parquet')}").fetchone()[0]
        if end_date is None:
            raise UbpError(f"{canonical_dir / S.PRODUCT_BUY}.parquet: no purchases, cannot place the target windows")
        train_start, validation_start = split_dates(end_date)
        before_train = f"timestamp < {timestamp_sql(train_start)}"
        rows: dict = {"input": {}}
        with atomic_dir(out_dir) as tmp:
            (tmp / "input").mkdir()
            for event in S.EVENT_TYPES:
                out = tmp / "input" / f"{event}.parquet"
                write_parquet(con, f"SELECT * FROM {scan(canonical_dir / f'{event}.parquet')} WHERE {before_train}", out)
                rows["input"][event] = count_rows(con, out)
            rows[S.TRAIN_TARGET] = write_target(
                con, canonical_dir, tmp / f"{S.TRAIN_TARGET}.parquet", train_start, validation_start, "<")
            rows[S.VALIDATION_TARGET] = write_target(
                con, canonical_dir, tmp / f"{S.VALIDATION_TARGET}.parquet", validation_start, end_date, "<=")
            info = {
                "end_date": end_date.strftime(S.TIMESTAMP_FORMAT),
                "train_target_start": train_start.strftime(S.TIMESTAMP_FORMAT),
                "validation_target_start": validation_start.strftime(S.TIMESTAMP_FORMAT),
                "days_in_target": DAYS_IN_TARGET,
                "rows": rows,
            }
            save_json(tmp / S.SPLIT_FILE, info)
    log.info("end_date %s, train_target_start %s, validation_target_start %s",
             info["end_date"], info["train_target_start"], info["validation_target_start"])
    log.info("rows: input %s, train target %d, validation target %d",
             rows["input"], rows[S.TRAIN_TARGET], rows[S.VALIDATION_TARGET])
    return info


def load_split_info(split_dir: Path) -> dict:
    """split.json with its dates parsed to datetimes."""
    path = Path(split_dir) / S.SPLIT_FILE
    if not path.is_file():
        raise UbpError(f"{path}: file not found (run `python -m ubp split` first)")
    info = load_json(path)
    for key in ("end_date", "train_target_start", "validation_target_start"):
        info[key] = dt.datetime.strptime(info[key], S.TIMESTAMP_FORMAT)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ubp split", description=__doc__.splitlines()[0])
    parser.add_argument("--canonical-dir", type=Path, default=S.CANONICAL_DIR)
    parser.add_argument("--out-dir", type=Path, default=S.SPLIT_DIR)
    args = parser.parse_args(argv)
    split(args.canonical_dir, args.out_dir, **resource_settings())
    return 0
