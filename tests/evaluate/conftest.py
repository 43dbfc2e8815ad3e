"""Fixtures for the evaluator's tests: the shared conformance suite's expected outputs."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def conformance_dir(conformance) -> Path:
    """expected/ of the suite; a missing suite fails in CI and skips elsewhere (tests/conftest.py)."""
    return conformance / "expected"
