import pytest

from ubp.db import connect
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
