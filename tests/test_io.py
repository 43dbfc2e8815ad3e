"""Outputs that cannot be written, and what killed writes leave behind (#16 parts 1 and 4)."""
import errno
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile

import pytest

from ubp import io, schema
from tests.conftest import REPO


def digest(root):
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def split_workdir(tmp_path, tiny_dirs):
    """A workdir with the tiny canonical data, params.yaml and a split stage's output already made."""
    shutil.copytree(tiny_dirs["canonical"], tmp_path / schema.CANONICAL_DIR)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    subprocess.run([sys.executable, "-m", "ubp", "split"], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def test_full_disk_names_the_output_and_keeps_the_previous_one(split_workdir):
    """A file-size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full disk) while
    the split stage rewrites its output: exit 1, one line naming it, the old output intact."""
    before = digest(split_workdir / schema.SPLIT_DIR)
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    done = subprocess.run([sys.executable, "-m", "ubp", "split"], cwd=split_workdir, preexec_fn=limit,
                          capture_output=True, text=True)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data/split: cannot write the output: File too large")
    assert "Traceback" not in done.stderr
    assert digest(split_workdir / schema.SPLIT_DIR) == before
    assert sorted(p.name for p in (split_workdir / "data").iterdir()) == ["canonical", "split"]  # no temporaries


def test_a_full_disk_reported_by_duckdb_names_the_cause_not_its_json(tmp_path):
    """DuckDB's COPY raises its own IOException whose text is a JSON blob: the user reads the cause."""
    import duckdb

    with io.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("old")
    blob = ('IO Error: Async write failed for range [offset=0, size=106]: {"exception_type":"IO","exception_message":'
            '"Could not write file \\"x.parquet\\": No space left on device","errno":"28"}')
    with pytest.raises(io.UbpError) as err:
        with io.atomic_dir(tmp_path / "out") as tmp:
            raise duckdb.IOException(blob)
    assert str(err.value) == (f"{tmp_path / 'out'}: cannot write the output: No space left on device (reported by "
                              "DuckDB; the previous output, if any, is unchanged)")
    assert (tmp_path / "out" / "a").read_text() == "old"


def test_read_only_filesystem_names_the_output(tmp_path, monkeypatch):
    with io.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("old")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(io.UbpError, match=rf"{tmp_path / 'out'}: cannot write the output: Read-only file system"):
        with io.atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a").write_text("new")
    assert (tmp_path / "out" / "a").read_text() == "old"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories (the EROFS test covers the message)")
def test_read_only_directory_names_the_output(tmp_path):
    (tmp_path / "ro").mkdir()
    io.save_json(tmp_path / "ro" / "m.json", {"a": 1})
    os.chmod(tmp_path / "ro", 0o555)
    try:
        with pytest.raises(io.UbpError, match="ro/m.json: cannot write the output: Permission denied"):
            io.save_json(tmp_path / "ro" / "m.json", {"a": 2})
    finally:
        os.chmod(tmp_path / "ro", 0o755)
    assert (tmp_path / "ro" / "m.json").read_text().strip().endswith("}")


def test_a_missing_input_is_not_called_an_unwritable_output(tmp_path):
    with pytest.raises(FileNotFoundError):
        with io.atomic_dir(tmp_path / "out"):
            open(tmp_path / "no-such-input.parquet")


def test_leftovers_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    for name in (".x.old", ".x.abcd_123.tmp", ".y.old", ".y.ABCDEFGH.tmp"):
        (tmp_path / name).mkdir()
    for name in (".xconfig", ".x.json", "x.old", ".x.abc.tmp"):  # not ours: kept
        (tmp_path / name).write_text("")
    with io.atomic_dir(tmp_path / "x") as tmp:
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".x.") and p != tmp) == [".x.abc.tmp", ".x.json"]
    assert (tmp_path / ".y.old").exists()  # another output's: left to its own next write, or the sweep
    assert sorted(p.name for p in io.sweep_stale(tmp_path)) == [".y.ABCDEFGH.tmp", ".y.old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.abc.tmp", ".x.json", ".xconfig", "x", "x.old"]


@pytest.mark.parametrize("exchange", [True, False])
def test_a_directory_is_replaced_whole_with_or_without_the_atomic_exchange(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setenv("UBP_NO_EXCHANGE", "1")
    with io.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "old-only").write_text("1")
    with io.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "new").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"] and sorted(os.listdir(tmp_path / "d")) == ["new"]
