"""One way to open DuckDB: bounded memory, a spill directory, a fixed thread count.

At the real data's size (169M events) a group-by does not fit in memory on a 24 GB box unless DuckDB
may spill. Every stage opens its connection here, so each honours the same limits: `memory_limit`
(a DuckDB size such as "8GB"; None = DuckDB's default, 80% of RAM) and `temp_directory` (where it
spills; None = a fresh directory under the system temp dir, removed on close). The environment
variables UBP_DUCKDB_MEMORY_LIMIT and UBP_DUCKDB_TEMP_DIR fill in what the caller leaves None, so a
user can bound every stage at once without touching params.yaml (they change no result).
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
