"""aggregated against the official baseline's embedding of the conformance data, exactly.

../shared/conformance/expected/baseline/ is what the official `create_embeddings` (defaults:
--num-days 1 7 30 --top-n 10) wrote for the official split of raw/ (README there): its input/ is
our split's input, its relevant clients ours. We run our ingest and split on raw/ and embed with
the repository's `models.aggregated` settings: same width and column order, float16-equal values for
every client the official code emits, zeros for the relevant clients it omits (no input events).
Top values with equal counts are ordered by numpy's quicksort in both codes (SPEC §9.1), whose
kernel depends on the CPU: the file was made where it sorts ties as AVX-512 does. There the test
asks for equality; on AVX2 the same columns in another order (checked by running it with
NPY_DISABLE_CPU_FEATURES=X86_V4,AVX512_ICL,AVX512_SPR); without AVX2 ties at the top-n cut change
which columns exist, and it skips saying so.
Without the suite it skips, except under CI, where it fails (tests/conftest.py's `conformance`).
"""
from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest

from ubp import schema
from ubp.data.ingest import ingest
from ubp.data.split import split
from ubp.models import aggregated
from ubp.models.base import EmbedContext
from ubp.params import load_params, model_config
from tests.conftest import REPO


@pytest.fixture(scope="module")
def official(conformance) -> tuple[np.ndarray, np.ndarray]:
    expected = conformance / "expected" / "baseline"
    return np.load(expected / "client_ids.npy"), np.load(expected / "embeddings.npy")


@pytest.fixture(scope="module")
def ours(official, conformance, tmp_path_factory) -> tuple[EmbedContext, np.ndarray]:
    root = tmp_path_factory.mktemp("conformance_baseline")
    ingest(conformance / "raw", root / "canonical")
    info = split(root / "canonical", root / "split")
    ctx = EmbedContext(client_ids=np.load(root / "canonical" / schema.RELEVANT_CLIENTS_FILE),
                       events_dir=root / "split" / "input",
                       properties_path=root / "canonical" / f"{schema.PROPERTIES}.parquet",
                       cutoff=datetime.strptime(info["train_target_start"], schema.TIMESTAMP_FORMAT))
    return ctx, aggregated.embed(ctx, model_config(load_params(REPO / "params.yaml"), "aggregated"))


def test_official_embedding_reproduced_exactly(official, ours):
    ids, expected = official
    ctx, got = ours
    assert expected.dtype == got.dtype == np.float16
    assert got.shape == (len(ctx.client_ids), expected.shape[1]) == (3000, 320)
    row = {c: i for i, c in enumerate(ctx.client_ids.tolist())}
    assert len(set(ids.tolist())) == len(ids) and set(ids.tolist()) <= set(row)
    mine = got[[row[c] for c in ids.tolist()]]
    if np.array_equal(mine, expected):
        return
    moved = [j for j in range(expected.shape[1]) if not np.array_equal(mine[:, j], expected[:, j])]
    assert not sorts_ties_like_avx512(), f"{len(moved)} columns differ on a CPU that sorts ties like the reference"
    # This CPU's numpy quicksort orders equal counts otherwise (AVX2 and baseline kernels differ from
    # AVX-512's), and the official code would move the same columns here: the golden file cannot be
    # matched in order. Same columns in another order is all we can ask; tied values at the top-n cut
    # (the 10th and 11th with equal counts) even change which columns exist, and then nothing can.
    same_columns = sorted(c.tobytes() for c in mine.T) == sorted(c.tobytes() for c in expected.T)
    if not same_columns:
        pytest.skip(f"numpy on this CPU breaks ties between equal counts otherwise than the AVX-512 machine "
                    f"that made the expected file ({len(moved)} columns differ): not comparable here")


def sorts_ties_like_avx512() -> bool:
    """Whether numpy's argsort(kind="quicksort") orders ties here as it did where the expected file
    was made (x86-64 with AVX-512): a probe of tied int64 counts and its order there."""
    probe = np.tile(np.array([3, 1, 3, 2, 1, 3, 1, 1, 2, 2, 3, 1, 2, 3, 1, 2, 2, 1, 3, 3], np.int64), 40)
    return np.argsort(probe, kind="quicksort")[:12].tolist() == REFERENCE_PROBE


REFERENCE_PROBE = [291, 294, 297, 301, 304, 306, 307, 311, 331, 334, 337, 341]


def test_relevant_clients_without_input_events_are_zero_rows(official, ours):
    """The official code emits a row only for clients with an input event: 2,753 of the 3,000."""
    ids, _ = official
    ctx, got = ours
    import duckdb

    with duckdb.connect() as con:
        active = {c for e in schema.EVENT_TYPES for (c,) in con.execute(
            f"SELECT DISTINCT client_id FROM read_parquet('{ctx.events(e)}')").fetchall()}
    emitted = set(ids.tolist())
    assert emitted == active & set(ctx.client_ids.tolist())
    omitted = [i for i, c in enumerate(ctx.client_ids.tolist()) if c not in emitted]
    assert len(omitted) == 3000 - 2753 and not got[omitted].any()
