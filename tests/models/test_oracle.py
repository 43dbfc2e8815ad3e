"""The oracle reads the generator's latent state of exactly the clients asked for, in their order,
blockwise (bounded memory at the real size) with the bytes of the whole-matrix computation."""
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from ubp import schema
from ubp.io import UbpError
from ubp.models import oracle
from ubp.models.base import EmbedContext, standardize

COLUMNS = [f"buys_category_{i}" for i in range(20)] + ["p_none_w1", "p_none_w2"] + [f"trait_{i}" for i in range(15)]


def write_state(root: Path, ids: np.ndarray, state: np.ndarray) -> Path:
    out = root / schema.ORACLE_SUBDIR
    out.mkdir(parents=True)
    np.save(out / "client_ids.npy", ids)
    np.save(out / "state.npy", state)
    (out / "columns.json").write_text(json.dumps(COLUMNS))
    return root


def context(synthetic_dir: Path, clients) -> EmbedContext:
    return EmbedContext(client_ids=np.asarray(clients, dtype=np.int64), events_dir=synthetic_dir,
                        properties_path=synthetic_dir / "none.parquet", cutoff=datetime(2022, 1, 1),
                        synthetic_dir=synthetic_dir)


@pytest.fixture
def state(tmp_path):
    rng = np.random.default_rng(3)
    ids = rng.permutation(np.arange(100, 160))  # unsorted, as the generator's blocks may leave them
    x = rng.gamma(0.5, 2.0, size=(len(ids), len(COLUMNS))).astype(np.float32)
    x[:, 20:22] = rng.uniform(0, 1, size=(len(ids), 2))
    return write_state(tmp_path, ids, x), ids, x


def test_rows_follow_the_asked_order_and_equal_the_whole_matrix_version(state):
    root, ids, x = state
    asked = [157, 101, 130, 100, 142, 119, 133, 150, 108, 125]
    got = oracle.embed(context(root, asked), oracle.Config())
    row = {int(c): i for i, c in enumerate(ids)}
    expected = standardize(oracle.transform(x[[row[c] for c in asked]], COLUMNS))  # 37 columns: 3 blocks
    assert got.dtype == np.float32 and got.shape == (len(asked), len(COLUMNS))
    assert got.tobytes() == expected.tobytes()
    # one client's row depends on who else is embedded (standardisation), not on its position
    again = oracle.embed(context(root, asked[::-1]), oracle.Config())
    assert again[::-1].tobytes() == got.tobytes()


def test_a_client_without_state_is_named(state):
    root, _, _ = state
    with pytest.raises(UbpError, match=r"client_ids\.npy: 2 clients to embed have no state \(e\.g\. 99\)"):
        oracle.embed(context(root, [101, 99, 102, 170]), oracle.Config())
