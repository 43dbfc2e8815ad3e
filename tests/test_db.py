import pyarrow.parquet as pq
import pytest

from ubp.db import connect, sql_text, write_parquet
from ubp.io import UbpError


def test_connect_applies_limits_and_removes_its_spill_directory(tmp_path):
    with connect(threads=1, memory_limit="256MB", temp_directory=tmp_path) as con:
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 1
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "244.1 MiB"  # 256e6 bytes
        spill = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
        assert spill.startswith(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_environment_fills_what_the_caller_leaves_out(tmp_path, monkeypatch):
    monkeypatch.setenv("UBP_DUCKDB_MEMORY_LIMIT", "300MB")
    monkeypatch.setenv("UBP_DUCKDB_TEMP_DIR", str(tmp_path / "spill"))
    with connect() as con:
        assert con.execute("SELECT current_setting('temp_directory')").fetchone()[0].startswith(str(tmp_path / "spill"))
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "286.1 MiB"  # 300e6 bytes


@pytest.mark.parametrize("bad", ["lots", "8", 8, "8 GBs"])
def test_a_bad_memory_limit_is_named(bad):
    with pytest.raises(UbpError, match="features.memory_limit"):
        with connect(memory_limit=bad, where="features.memory_limit"):
            pass


def test_write_parquet_bytes_do_not_depend_on_the_thread_count(tmp_path):
    """300k rows read from 100k-row groups, filtered: a plain COPY on 4 threads cuts the output's row
    groups elsewhere than on 1 thread (other bytes for the same rows); write_parquet gives one file."""
    source = tmp_path / "source.parquet"
    with connect(threads=1) as con:
        con.execute(f"COPY (SELECT i AS client_id, i * 7 % 1000 AS sku FROM range(300000) t(i)) "
                    f"TO {sql_text(source)} (FORMAT parquet, ROW_GROUP_SIZE 100000)")
    query = f"SELECT * FROM read_parquet({sql_text(source)}) WHERE sku <> 3"
    written = {}
    for threads in (1, 4):
        with connect(threads=threads) as con:
            write_parquet(con, query, tmp_path / f"{threads}.parquet")
            assert con.execute("SELECT current_setting('threads')").fetchone()[0] == threads  # restored
        written[threads] = (tmp_path / f"{threads}.parquet").read_bytes()
    assert written[1] == written[4]
    table = pq.read_table(tmp_path / "4.parquet")
    assert table.num_rows == 299700 and pq.ParquetFile(tmp_path / "4.parquet").metadata.num_row_groups > 1
    assert table.column("client_id").to_pylist() == [i for i in range(300000) if i * 7 % 1000 != 3]  # 429, 1429, ...
