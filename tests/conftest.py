"""Shared fixtures: the enhancer's helpers and access to ../shared/data when present."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/signals.py, tests/shared_data.py


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """../shared/data beside the checkout; tests that need it skip cleanly without it."""
    from shared_data import find_shared_data

    path = find_shared_data()
    if path is None:
        pytest.skip("../shared/data is not present beside the checkout")
    return path
