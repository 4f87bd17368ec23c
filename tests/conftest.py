"""Shared fixtures: a fresh result store per test and the path of the real data, when present."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("TQDM_DISABLE", "1")
# generated data sets go to a throw-away cache, never the user's home (workers inherit this)
os.environ.setdefault("JOULEBENCH_CACHE", tempfile.mkdtemp(prefix="joulebench-test-cache-"))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


def shared_file(name: str) -> Path:
    """A real data file from ../shared/data, or a skip that says why it is missing."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"real data {name} not found at {path} (only developers and CI have ../shared)")
    return path
