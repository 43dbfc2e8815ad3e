"""User-facing errors and atomic writes: a killed stage never leaves a half-written output.

An output is written into a temporary sibling (`.<name>.<random>.tmp`) and renamed onto its path
only when complete; a directory that replaces another passes through `.<name>.old`. A stage killed
part-way leaves at most those siblings: the next write of the same path removes them, and
`sweep_stale` removes them at every stage's start. A disk that fills or a path that cannot be
written stops the stage with a UbpError naming the output, and the previous output stays in place.
A directory replaces another in one atomic exchange where Linux allows it (renameat2), so its
path never goes missing. `UBP_FAULT=<point>[:<name>]` kills the whole run (SIGKILL to the process
group) at a point of a write, for the kill tests (tests/test_kill.py): `written` (the temporary
output is complete), `between` (without the exchange: the old copy set aside, the new one not yet
in place), `replaced` (the new output in place, the old copy not yet removed).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


def _default_mode(directory: bool) -> int:
    """The mode a plain open()/mkdir() would give (mkstemp/mkdtemp make private 0600/0700 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


class UbpError(Exception):
    """A problem with the user's input or configuration, stated plainly (file, column, row, problem)."""


FAULT_ENV = "UBP_FAULT"
# errno values that mean "this output cannot be written" rather than a bug or a missing input
WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}
STALE = re.compile(r"^\.(?P<name>.+)\.(old|[A-Za-z0-9_]{8}\.tmp)$")


def _fault(point: str, path: Path) -> None:
    wanted = os.environ.get(FAULT_ENV)
    if wanted and wanted in (point, f"{point}:{path.name}"):
        os.killpg(os.getpgid(0), signal.SIGKILL)  # the whole run at once, as a machine stop would


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _leftovers(directory: Path, name: str | None = None) -> list[Path]:
    """What killed writes left in `directory` (of the output `name` only, if given)."""
    if not directory.is_dir():
        return []
    return [entry for entry in sorted(directory.iterdir())
            if (match := STALE.match(entry.name)) and name in (None, match["name"])]


def _clear_leftovers(path: Path) -> None:
    """The siblings a killed write of `path` left behind (a DVC lock allows one writer per path)."""
    for entry in _leftovers(path.parent, path.name):
        _remove(entry)


def sweep_stale(*roots: str | os.PathLike) -> list[Path]:
    """Remove what killed writes left in these directories (not recursive); returns what it removed."""
    removed = [entry for root in roots for entry in _leftovers(Path(root))]
    for entry in removed:
        _remove(entry)
    return removed


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """OS errors that mean the output cannot be written, as a UbpError naming it."""
    try:
        yield
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS or (exc.errno in (errno.EACCES, errno.EPERM) and _is_ours(exc, path)):
            raise UbpError(f"{path}: cannot write the output: {exc.strerror or exc} "
                           f"(the previous output, if any, is unchanged)") from None
        raise
    except Exception as exc:  # DuckDB reports a full disk with its own exception type
        duckdb = sys.modules.get("duckdb")
        found = re.search(r"No space left on device|File too large|Disk quota exceeded|Read-only file system",
                          str(exc)) if duckdb is not None and isinstance(exc, duckdb.IOException) else None
        if found:  # DuckDB's own text is a JSON blob: name the cause, as for an OSError
            raise UbpError(f"{path}: cannot write the output: {found.group(0)} (reported by DuckDB; "
                           f"the previous output, if any, is unchanged)") from None
        raise


def _is_ours(exc: OSError, path: Path) -> bool:
    """Was the refused file the output, its temporary sibling or its parent (not an input being read)?"""
    path, temporary = path.absolute(), f".{path.name}."
    for name in filter(None, (exc.filename, exc.filename2)):
        name = Path(name).absolute()
        if name in (path, path.parent) or path in name.parents \
                or any(p.name.startswith(temporary) for p in (name, *name.parents)):
            return True
    return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_leftovers(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp)
        try:
            yield tmp
            os.chmod(tmp, _default_mode(directory=False))
            _fault("written", path)
            os.replace(tmp, path)
            _fault("replaced", path)
        finally:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `path` whole (old contents removed)."""
    path = Path(path)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_leftovers(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            yield tmp
            os.chmod(tmp, _default_mode(directory=True))
            _fault("written", path)
            if not path.exists():
                os.replace(tmp, path)
                _fault("replaced", path)
            elif _exchange(tmp, path):  # one atomic step: `path` is never missing
                _fault("replaced", path)  # tmp now holds the old contents, removed below
            else:  # no RENAME_EXCHANGE here: two renames, the old copy set aside between
                old = path.with_name(f".{path.name}.old")
                os.replace(path, old)
                _fault("between", path)
                os.replace(tmp, path)
                _fault("replaced", path)
                shutil.rmtree(old)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100
_exchange_works: bool | None = None if sys.platform.startswith("linux") else False


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system or the
    filesystem cannot (the caller falls back to two renames). UBP_NO_EXCHANGE=1 forces the fallback."""
    global _exchange_works
    if _exchange_works is False or os.environ.get("UBP_NO_EXCHANGE"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        done = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0
    except AttributeError:  # a C library without renameat2
        done = False
    if not done:
        err = ctypes.get_errno()
        if err and err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, 0):
            raise OSError(err, os.strerror(err), str(b))
        _exchange_works = False
    return done


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def save_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def npy_problem(path: Path, exc: Exception) -> str:
    """Why numpy could not load `path`, in the user's terms (numpy's own text for a file that is not
    .npy at all talks of pickles and `allow_pickle`, which a user must not be told to switch on)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "an empty file, not a .npy array"
    if not head.startswith(b"\x93NUMPY"):
        return "not a .npy array (the file does not start with numpy's header; save it with numpy.save)"
    if b"'descr': '|O'" in head:
        return "a .npy array of Python objects (pickled), refused without unpickling; save plain numbers"
    return f"a truncated or corrupt .npy array ({type(exc).__name__}: {exc})"


def load_npy(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise UbpError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a corrupt file
        raise UbpError(f"{path}: {npy_problem(path, exc)}") from None


def load_json(path: str | os.PathLike):
    path = Path(path)
    if not path.exists():
        raise UbpError(f"{path}: file not found")
    return json.loads(path.read_text())


# The only globals an object .npy array's pickle may name: numpy's own array, dtype and scalar
# reconstruction (module spelled as numpy 1 and numpy 2 write it). Nothing else is ever imported.
_SAFE_PICKLE_GLOBALS = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                        for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_PICKLE_GLOBALS:
            raise UbpError(f"{self.path}: refusing a pickled object array that names {module}.{name} "
                           "(only numpy arrays of integers are accepted)")
        return super().find_class(module, name)


def load_int_npy(path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    """(array, came from an object array). The organisers' files may be object arrays (the official
    code loads them with allow_pickle=True): those are unpickled with _ArrayUnpickler, never able
    to call anything but numpy's array reconstruction, and every element must be an integer (not a
    bool); they come back as int64. Any other array is read with allow_pickle=False, unchanged."""
    path = Path(path)
    if not path.exists():
        raise UbpError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                return load_npy(path), False
            shape, fortran, dtype = read_header(f)
            if not dtype.hasobject:
                return load_npy(path), False
            if dtype != np.dtype(object):
                raise UbpError(f"{path}: a structured array holding objects ({dtype}); expected integers")
            array = _ArrayUnpickler(f, path).load()
    except UbpError:
        raise
    except Exception as exc:  # a truncated or corrupt file: numpy and pickle raise many types
        raise UbpError(f"{path}: {npy_problem(path, exc)}") from None
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype(object) or array.shape != tuple(shape):
        raise UbpError(f"{path}: the pickled payload is not the object array its header announces")
    flat = array.ravel(order="F" if fortran else "C")
    for i, value in enumerate(flat):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise UbpError(f"{path}: element {i} (0-based) is {value!r} ({type(value).__name__}), "
                           "expected an integer")
        if not np.iinfo(np.int64).min <= int(value) <= np.iinfo(np.int64).max:
            raise UbpError(f"{path}: element {i} (0-based) is {value!r}, outside the int64 range")
    return np.array(flat.tolist(), dtype=np.int64).reshape(array.shape, order="F" if fortran else "C"), True
