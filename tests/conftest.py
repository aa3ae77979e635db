"""Test-wide fixtures: the repository root on sys.path and the location of ../shared/data."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # lets the suite run from a checkout that was not pip-installed
    sys.path.insert(0, str(REPO))

SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (third-party data, never copied into the repo); tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"third-party data folder {SHARED_DATA} is absent (put it beside the checkout: README, Tests)")
    return SHARED_DATA
