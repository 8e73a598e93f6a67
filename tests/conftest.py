"""Shared fixtures: the enhancer's helpers, access to ../shared/data when present, and
deterministic property tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))  # tests/signals.py, tests/shared_data.py

# property tests draw the same examples every run (no database, a seed from each test), so CI
# never depends on a lucky draw; a found case becomes an explicit @example
settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """../shared/data beside the checkout; tests that need it skip cleanly without it."""
    from shared_data import find_shared_data

    path = find_shared_data()
    if path is None:
        pytest.skip("../shared/data is not present beside the checkout")
    return path
