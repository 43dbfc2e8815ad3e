"""A stage killed mid-write (SIGKILL to the whole run) recovers on the next run (#16 part 1).

A few cases of tests/kill_harness.py's matrix, one per kind of write: a directory killed under DVC
once complete and once in place, by hand while set aside (no RENAME_EXCHANGE) and after the atomic
swap, and a metrics file. benchmarks/kill_matrix.py runs every stage x point x runner.
"""
import pytest

from tests import kill_harness as K

CASES = [
    K.Case("ingest", *K.STAGES["ingest"], "written", "dvc"),
    K.Case("features", *K.STAGES["features"], "replaced", "dvc"),
    K.Case("split", *K.STAGES["split"], "between", "hand"),
    K.Case("embed@aggregated", *K.STAGES["embed@aggregated"], "replaced", "hand"),
    K.Case("evaluate@aggregated", *K.STAGES["evaluate@aggregated"], "written", "hand"),
]


@pytest.fixture(scope="module")
def killable(tmp_path_factory):
    root = tmp_path_factory.mktemp("killable")
    K.make_repo(root)
    return root, K.snapshot(root)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.stage}-{c.point}-{c.runner}")
def test_killed_stage_recovers_to_the_same_bytes(killable, case):
    root, baseline = killable
    result = K.run_case(root, case, baseline)
    assert result["killed"], "the fault point was never reached: the case tests nothing"
    if case.point == "written":  # the complete temporary is there (under DVC, `replaced` leaves nothing)
        assert result["left"], "a kill mid-write leaves a temporary behind, else the point is not mid-write"
    assert result["recovered"], result["error"]
    assert result["same"], f"outputs differ from an uninterrupted run: {result['differs']}"
    assert result["leftovers"] == [], "the re-run left the killed write's temporaries"
    assert result["up_to_date"], f"dvc status after the recovery: {result['pending']}"
