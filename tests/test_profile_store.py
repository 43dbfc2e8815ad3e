"""One module writes, reads and checks a profile directory (SPEC §7's layout)."""
import numpy as np
import pytest

from ubp import profile_store as store
from ubp.io import UbpError
from ubp.models.base import standardize


def make(tmp_path, ids=(3, 1, 2), x=None, name="p"):
    x = np.arange(len(ids) * 2, dtype=np.float16).reshape(len(ids), 2) if x is None else x
    store.write(tmp_path / name, np.asarray(ids, np.int64), {"profile": name}, x)
    return tmp_path / name


def test_round_trip_keeps_row_order_and_maps_the_matrix(tmp_path):
    stored = store.open_profile(make(tmp_path), relevant=np.array([1, 2, 3]), entry=True)
    assert stored.client_ids.tolist() == [3, 1, 2] and stored.shape == (3, 2)
    assert isinstance(stored.embeddings, np.memmap) and stored.embeddings[2].tolist() == [4.0, 5.0]
    assert store.read_meta(tmp_path / "p") == {"profile": "p"} and store.skipped(tmp_path / "p") is None


def test_blockwise_fill_and_meta_from_the_shape(tmp_path):
    def fill(path):
        np.save(path, np.ones((2, 5), np.float16))
        return (2, 5)

    shape = store.write(tmp_path / "q", np.array([7, 8]), lambda s: {"dim": s[1]}, fill=fill)
    assert shape == (2, 5) and store.read_meta(tmp_path / "q") == {"dim": 5}
    with pytest.raises(ValueError):
        store.write(tmp_path / "q", np.array([7, 8]), {}, np.ones((2, 1)), fill=fill)


def test_a_refused_write_leaves_the_old_directory(tmp_path):
    make(tmp_path)

    def refuse(tmp):
        raise UbpError("no")

    with pytest.raises(UbpError, match="no"):
        store.write(tmp_path / "p", np.array([9]), {"profile": "new"}, np.zeros((1, 2), np.float16), check=refuse)
    assert store.read_meta(tmp_path / "p") == {"profile": "p"}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p"]  # no temporary directory left


def test_skipped_directory(tmp_path):
    store.write_skipped(tmp_path / "o", "synthetic only")
    assert store.skipped(tmp_path / "o") == "synthetic only"


@pytest.mark.parametrize("ids, x, entry, relevant, message", [
    (np.array([1, 2], np.int32), np.zeros((2, 2), np.float16), False, None, "1-D int64"),
    (np.array([1, 2]), np.zeros((3, 2), np.float16), False, None, "3 rows for 2 client ids"),
    (np.array([1, 1]), np.zeros((2, 2), np.float16), False, None, "1 duplicate client ids"),
    (np.array([1, 2]), np.zeros((2, 2), np.float32), True, None, "must be float16"),
    (np.array([1, 2]), np.zeros((2, 2), np.float32), False, np.array([1, 2, 3]), "1 missing, 0 not relevant"),
    (np.array([1, 2]), np.array([[0, 0], [0, np.inf]], np.float16), True, None, r"NaN or inf values in 1 rows \(first in row 1\)"),
    (np.array([1, 2]), np.zeros((2, 2049), np.float16), False, None, "2049 dimensions, the limit is 2048"),
    (np.array([1, 2]), np.zeros(2, np.float16), False, None, "expected a 2-D float array"),
])
def test_bad_directories_are_refused_naming_the_file(tmp_path, ids, x, entry, relevant, message):
    (tmp_path / "p").mkdir()
    np.save(tmp_path / "p" / store.CLIENT_IDS, ids)
    np.save(tmp_path / "p" / store.EMBEDDINGS, x)
    with pytest.raises(UbpError, match=message) as caught:
        store.open_profile(tmp_path / "p", relevant, entry=entry)
    assert str(tmp_path / "p") in str(caught.value)


def test_nan_is_left_to_the_reader_outside_entries(tmp_path):
    x = np.array([[np.nan, 0.0]], np.float16)
    assert store.open_profile(make(tmp_path, ids=[1], x=x)).shape == (1, 2)


def test_finite_check_finds_rows_across_blocks(monkeypatch):
    monkeypatch.setattr(store, "BLOCK_BYTES", 8)  # two float16 rows of 2 per block
    x = np.zeros((7, 2), np.float16)
    x[5, 1] = np.nan
    x[6, 0] = np.inf
    with pytest.raises(UbpError, match=r"in 2 rows \(first in row 5\)"):
        store.check_finite(x, "f.npy")


def test_meta_that_is_not_json_is_named(tmp_path):
    (make(tmp_path) / store.META).write_text("{oops")
    with pytest.raises(UbpError, match="meta.json: not valid JSON"):
        store.read_meta(tmp_path / "p")


def test_standardize_by_hand():
    x = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 2.0000001], [5.0, 5.0, 2.0]])
    out = standardize(x)
    sd = np.sqrt(8 / 3)
    np.testing.assert_allclose(out[:, 0], [-2 / sd, 0, 2 / sd], rtol=1e-6)
    assert out.dtype == np.float32 and not out[:, 1].any()  # a constant column only centred
    np.testing.assert_allclose(out[:, 2], x[:, 2] - x[:, 2].mean(), atol=1e-7)  # sd below 1e-6: centred, not blown up
    wide = np.random.default_rng(0).standard_normal((50, 40)) * 3 + 1  # more columns than one block
    np.testing.assert_array_equal(standardize(wide), ((wide - wide.mean(0)) / wide.std(0)).astype(np.float32))
