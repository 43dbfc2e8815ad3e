"""Competition entries (SPEC §7): `submit` writes the relevant clients with their own rows, made from
all events; the validator rejects every broken form with a message naming the file and the problem."""
import importlib
import io
import json
import re
import sys
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

import ubp.models
from ubp import schema
from ubp.io import UbpError
from ubp.submission import submit, validate

RELEVANT = np.array([11, 22, 33, 44], dtype=np.int64)


def write_entry(path, ids, emb):
    path.mkdir(parents=True, exist_ok=True)
    if ids is not None:
        np.save(path / "client_ids.npy", ids)
    if emb is not None:
        np.save(path / "embeddings.npy", emb)
    return path


def good_embeddings(n=4, d=8):
    return np.arange(n * d, dtype=np.float16).reshape(n, d) / 10


def test_valid_entry_in_any_order_passes(tmp_path):
    entry = write_entry(tmp_path / "e", RELEVANT[::-1].copy(), good_embeddings())
    validate(entry, RELEVANT)
    validate(entry)  # without the relevant-clients check too


# (client ids, embeddings, a part of the message): also benchmarks/bad_inputs.py's validator cases
BROKEN_ENTRIES = [
    (None, good_embeddings(), "client_ids.npy: file not found"),
    (RELEVANT, None, "embeddings.npy: file not found"),
    (RELEVANT.reshape(2, 2), good_embeddings(), "expected a 1-D int64 array, got int64 with shape (2, 2)"),
    (RELEVANT.astype(np.int32), good_embeddings(), "expected a 1-D int64 array, got int32"),
    (RELEVANT, good_embeddings().astype(np.float32), "must be float16, got float32"),
    (RELEVANT, good_embeddings().ravel(), "expected a 2-D float array"),
    (RELEVANT, np.zeros((4, 2049), dtype=np.float16), "2049 dimensions, the limit is 2048"),
    (RELEVANT, good_embeddings(n=3), "3 rows for 4 client ids in client_ids.npy"),
    (RELEVANT, np.where(np.eye(4, 8) > 0, np.nan, 0).astype(np.float16), "NaN or inf values in 4 rows (first in row 0)"),
    (RELEVANT, np.full((4, 8), np.inf, dtype=np.float16), "NaN or inf"),
    (np.array([11, 22, 22, 44], dtype=np.int64), good_embeddings(), "1 duplicate client ids (e.g. 22)"),
    (np.array([11, 22, 33, 55], dtype=np.int64), good_embeddings(), "(1 missing, 1 not relevant; missing e.g. 44)"),
    (RELEVANT[:3], good_embeddings(n=3), "exactly the 4 relevant clients (1 missing"),
]


@pytest.mark.parametrize("ids, emb, message", BROKEN_ENTRIES)
def test_broken_entries_are_rejected(tmp_path, ids, emb, message):
    entry = write_entry(tmp_path / "e", ids, emb)
    with pytest.raises(UbpError) as err:
        validate(entry, RELEVANT)
    assert message in str(err.value)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


UNREADABLE_FILES = [  # (file, its bytes, the message)
    ("embeddings.npy", b"not an array", "embeddings.npy: not a .npy array (the file does not start with numpy's header"),
    ("embeddings.npy", b"", "embeddings.npy: an empty file, not a .npy array"),
    ("client_ids.npy", b"", "client_ids.npy: an empty file, not a .npy array"),
    ("client_ids.npy", b"11,22,33,44\n", "client_ids.npy: not a .npy array"),  # a CSV, not .npy
    ("embeddings.npy", npy_bytes(good_embeddings())[:-10], "embeddings.npy: a truncated or corrupt .npy array"),
]


@pytest.mark.parametrize("target, content, message", UNREADABLE_FILES)
def test_unreadable_files_are_named(tmp_path, target, content, message):
    entry = write_entry(tmp_path / "e", RELEVANT, good_embeddings())
    (entry / target).write_bytes(content)
    with pytest.raises(UbpError, match=re.escape(message)) as err:
        validate(entry, RELEVANT)
    assert "allow_pickle" not in str(err.value)  # numpy's advice to unpickle is never passed on


NON_INT_IDS = [  # (client ids, the message)
    (RELEVANT.astype(np.float64), "expected a 1-D int64 array, got float64"),  # ids not integers
    (np.array(["11", "22", "33", "44"]), "expected a 1-D int64 array, got <U2"),
    (np.array([], dtype=np.int64), "4 rows for 0 client ids"),  # an empty id file
]


@pytest.mark.parametrize("ids, message", NON_INT_IDS)
def test_ids_that_are_not_int64_clients_are_refused(tmp_path, ids, message):
    entry = write_entry(tmp_path / "e", ids, good_embeddings())
    with pytest.raises(UbpError, match=message):
        validate(entry, RELEVANT)


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    entry = write_entry(tmp_path / "e", RELEVANT, good_embeddings())
    np.save(entry / "client_ids.npy", np.array([11, 22, 33, 44], dtype=object), allow_pickle=True)
    with pytest.raises(UbpError, match=re.escape("client_ids.npy: a .npy array of Python objects (pickled), "
                                                 "refused without unpickling")):
        validate(entry, RELEVANT)


def id_code(ids: np.ndarray) -> np.ndarray:
    """Each id as three base-1000 digits: exact in float16 (integers up to 2048 are), so a row says
    which client it was made for."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 1000, ids // 1000 % 1000, ids // 1_000_000], axis=1).astype(np.float16)


def decoded(emb: np.ndarray) -> np.ndarray:
    digits = emb.astype(np.int64)
    return digits[:, 0] + 1000 * digits[:, 1] + 1_000_000 * digits[:, 2]


CODED = '''"""A method whose row for a client is that client's id code; remembers the contexts it got."""
from dataclasses import dataclass

from ubp.models.base import EmbeddingConfig, ProfileUnavailable
from tests.test_submission import id_code

READS = ("events",)
contexts = []


@dataclass(frozen=True)
class Config(EmbeddingConfig):
    unavailable: bool = False


def embed(ctx, cfg):
    contexts.append(ctx)
    if cfg.unavailable:
        raise ProfileUnavailable("synthetic only")
    return id_code(ctx.client_ids)
'''


@pytest.fixture
def repo(tmp_path, monkeypatch, tiny_dirs):
    """A cwd laid out like the repository: data/canonical (the tiny dataset's), and a method `coded`
    dropped into ubp.models as a user would add one (a module file) with its params entry."""
    (tmp_path / schema.CANONICAL_DIR).parent.mkdir(parents=True)
    (tmp_path / schema.CANONICAL_DIR).symlink_to(tiny_dirs["canonical"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "coded.py").write_text(CODED)
    monkeypatch.setattr(ubp.models, "__path__", [*ubp.models.__path__, str(tmp_path / "methods")])
    params = {"embedding": {}, "models": {"coded": {"method": "coded", "inherits": "embedding"}}}
    try:
        yield tmp_path, params, importlib.import_module("ubp.models.coded")
    finally:
        sys.modules.pop("ubp.models.coded", None)


def test_submit_writes_the_relevant_clients_with_their_rows_from_all_events(repo, tiny_dirs):
    root, params, method = repo
    relevant = np.load(tiny_dirs["canonical"] / schema.RELEVANT_CLIENTS_FILE)
    submit("coded", root / "entry", params)
    ids, emb = np.load(root / "entry" / "client_ids.npy"), np.load(root / "entry" / "embeddings.npy")
    assert ids.dtype == np.int64 and np.array_equal(ids, relevant)  # relevant_clients.npy's ids, in its order
    assert emb.dtype == np.float16 and np.array_equal(decoded(emb), ids)  # row i is client ids[i]'s
    (ctx,) = method.contexts
    last = max(pd.read_parquet(tiny_dirs["canonical"] / f"{e}.parquet", columns=[schema.TIMESTAMP])
               [schema.TIMESTAMP].max() for e in schema.EVENT_TYPES)
    assert ctx.cutoff == last.to_pydatetime() + timedelta(seconds=1)  # every event, the target windows' too
    assert ctx.events_dir.resolve() == tiny_dirs["canonical"].resolve()
    meta = json.loads((root / "entry" / "meta.json").read_text())
    assert (meta["events"], meta["cutoff"]) == ("all", ctx.cutoff.strftime(schema.TIMESTAMP_FORMAT))


def test_submit_from_input_packages_the_stored_profile_in_its_own_order(repo, tiny_dirs):
    root, params, method = repo
    relevant = np.load(tiny_dirs["canonical"] / schema.RELEVANT_CLIENTS_FILE)
    ids = np.random.default_rng(0).permutation(relevant)
    stored = root / schema.EMBEDDINGS_DIR / "coded"
    stored.mkdir(parents=True)
    np.save(stored / "client_ids.npy", ids)
    np.save(stored / "embeddings.npy", id_code(ids))
    submit("coded", root / "entry", params, from_input=True)
    got = np.load(root / "entry" / "client_ids.npy")
    assert got.dtype == np.int64 and np.array_equal(got, ids) and not method.contexts  # nothing re-embedded
    assert np.array_equal(decoded(np.load(root / "entry" / "embeddings.npy")), ids)
    np.save(stored / "client_ids.npy", ids[1:])  # one relevant client short: refused, named
    np.save(stored / "embeddings.npy", id_code(ids[1:]))
    with pytest.raises(UbpError, match=rf"entry2/client_ids.npy: the ids must be exactly the {len(relevant)} relevant clients \(1 missing"):
        submit("coded", root / "entry2", params, from_input=True)


def test_submit_names_a_profile_that_cannot_make_an_entry(repo):
    root, params, _ = repo
    params["models"]["coded"]["unavailable"] = True
    with pytest.raises(UbpError, match="profile 'coded' cannot make an entry: synthetic only"):
        submit("coded", root / "entry", params)
    assert not (root / "entry").exists()


def test_a_refused_entry_leaves_no_directory(repo, tiny_dirs):
    root, params, _ = repo
    ids = np.load(tiny_dirs["canonical"] / schema.RELEVANT_CLIENTS_FILE)[1:]  # one relevant client short
    stored = root / schema.EMBEDDINGS_DIR / "coded"
    stored.mkdir(parents=True)
    np.save(stored / "client_ids.npy", ids)
    np.save(stored / "embeddings.npy", id_code(ids))
    with pytest.raises(UbpError, match="1 missing"):
        submit("coded", root / "entry", params, from_input=True)
    assert not (root / "entry").exists()
