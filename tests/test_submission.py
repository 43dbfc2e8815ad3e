"""The entry validator rejects every broken form with a message naming the file and the problem."""
import numpy as np
import pytest

from ubp.io import UbpError
from ubp.submission import validate

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


@pytest.mark.parametrize(
    "ids, emb, message",
    [
        (None, good_embeddings(), "client_ids.npy: file not found"),
        (RELEVANT, None, "embeddings.npy: file not found"),
        (RELEVANT.reshape(2, 2), good_embeddings(), "must be 1-D"),
        (RELEVANT.astype(np.int32), good_embeddings(), "must be int64, got int32"),
        (RELEVANT, good_embeddings().astype(np.float32), "must be float16, got float32"),
        (RELEVANT, good_embeddings().ravel(), "must be 2-D"),
        (RELEVANT, np.zeros((4, 2049), dtype=np.float16), "2049 columns, at most 2048"),
        (RELEVANT, good_embeddings(n=3), "3 rows but client_ids.npy has 4 ids"),
        (RELEVANT, np.where(np.eye(4, 8) > 0, np.nan, 0).astype(np.float16), "NaN or inf values (4 of them; first in row 0)"),
        (RELEVANT, np.full((4, 8), np.inf, dtype=np.float16), "NaN or inf"),
        (np.array([11, 22, 22, 44], dtype=np.int64), good_embeddings(), "duplicate client ids (1; e.g. 22)"),
        (np.array([11, 22, 33, 55], dtype=np.int64), good_embeddings(), "1 missing, 1 not relevant (e.g. missing 44)"),
        (RELEVANT[:3], good_embeddings(n=3), "exactly the 4 relevant clients; 1 missing"),
    ],
)
def test_broken_entries_are_rejected(tmp_path, ids, emb, message):
    entry = write_entry(tmp_path / "e", ids, emb)
    with pytest.raises(UbpError) as err:
        validate(entry, RELEVANT)
    assert message in str(err.value)


def test_corrupt_file_is_named(tmp_path):
    entry = write_entry(tmp_path / "e", RELEVANT, good_embeddings())
    (entry / "embeddings.npy").write_bytes(b"not an array")
    with pytest.raises(UbpError, match="embeddings.npy: not a readable .npy array"):
        validate(entry, RELEVANT)
