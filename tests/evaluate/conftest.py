"""Fixtures for the evaluator's tests: the shared conformance suite, located beside the repository."""
from __future__ import annotations

from pathlib import Path

import pytest

CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    expected = CONFORMANCE / "expected"
    if not expected.is_dir():
        pytest.skip(f"conformance suite not found at {CONFORMANCE} (clone the repo beside shared/)")
    return expected
