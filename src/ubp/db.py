"""One way to open DuckDB: bounded memory, a spill directory, a fixed thread count.

At the real data's size (169M events) a group-by does not fit in memory on a 24 GB box unless DuckDB
may spill. Every stage opens its connection here, so each honours the same limits: `memory_limit`
(a DuckDB size such as "8GB"; None = DuckDB's default, 80% of RAM) and `temp_directory` (where it
spills; None = a fresh directory under the system temp dir, removed on close). The environment
variables UBP_DUCKDB_MEMORY_LIMIT and UBP_DUCKDB_TEMP_DIR fill in what the caller leaves None, so a
user can bound every stage at once without touching params.yaml (they change no result).

`write_parquet` writes a query's rows with a layout that depends only on the rows, so a stage's
output has the same bytes however many threads ran it (DVC hashes those bytes).
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb

from ubp.io import UbpError

SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*$", re.IGNORECASE)


def sql_text(value) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def timestamp_sql(value) -> str:
    """A SQL TIMESTAMP literal of a datetime."""
    return f"TIMESTAMP {sql_text(value.isoformat(sep=' '))}"


def check_size(value, where: str) -> str:
    if not isinstance(value, str) or not SIZE.match(value):
        raise UbpError(f"{where}: expected a size such as '8GB' or '512MB', got {value!r}")
    return value.strip()


@contextlib.contextmanager
def connect(threads: int | None = None, memory_limit: str | None = None, temp_directory: str | Path | None = None,
            preserve_order: bool = True, where: str = "memory_limit") -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory connection with the limits above; closed (and its spill directory removed) on exit."""
    memory_limit = memory_limit or os.environ.get("UBP_DUCKDB_MEMORY_LIMIT") or None
    temp_root = temp_directory or os.environ.get("UBP_DUCKDB_TEMP_DIR") or None
    if temp_root is not None:
        Path(temp_root).mkdir(parents=True, exist_ok=True)
    spill = tempfile.TemporaryDirectory(prefix="ubp-duckdb-", dir=temp_root)
    con = duckdb.connect()
    try:
        con.execute(f"SET temp_directory = {sql_text(spill.name)}")
        con.execute("SET enable_progress_bar = false")
        con.execute(f"SET preserve_insertion_order = {'true' if preserve_order else 'false'}")
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise UbpError(f"threads: expected a whole number >= 1, got {threads!r}")
            con.execute(f"SET threads TO {threads}")
        if memory_limit is not None:
            con.execute(f"SET memory_limit = {sql_text(check_size(memory_limit, where))}")
        yield con
    finally:
        con.close()
        spill.cleanup()


def write_parquet(con: duckdb.DuckDBPyConnection, query: str, out: str | Path) -> None:
    """COPY (query) TO out as zstd parquet, on one thread. With several threads DuckDB's parallel
    writer cuts row groups where its threads happen to flush (at 154M rows two runs of one COPY cut
    row 236 at 122,880 and 120,832 rows): the same rows in other bytes, so DVC re-ran every stage
    downstream of an unchanged input. One thread cuts them at the same rows every time; writing is
    bound by compression on one core anyway (measured at 1M: 52-59 s either way)."""
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    con.execute("SET threads TO 1")
    try:
        con.execute(f"COPY ({query}) TO {sql_text(out)} (FORMAT parquet, COMPRESSION zstd)")
    finally:
        con.execute(f"SET threads TO {threads}")
