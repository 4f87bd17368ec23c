"""Issue 16's fault scenarios (``benchmarks/store_faults.py``) at counts that fit CI.

The benchmark runs them at the issue's counts (240 retries x 3 trials, 300 reads, 30-run
campaign); these tests run the same code smaller, except the two-driver campaign, whose count is
the claim being tested.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "store_faults.py"
# the scenarios start processes (spawn) that import this module by name: they need its folder
sys.path.insert(0, str(BENCH.parent))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH.parent), os.environ.get("PYTHONPATH")) if p)
faults = importlib.import_module("store_faults")  # by name, so spawned processes find its functions

CLEAN = {"lost": 0, "duplicated": 0, "failed_reads": 0}


@pytest.mark.slow
def test_retries_written_under_a_compaction_loop_are_never_lost(tmp_path: Path) -> None:
    assert faults.retries_under_compaction(tmp_path, runs=60) == CLEAN


@pytest.mark.slow
def test_concurrent_and_killed_compactions_leave_no_duplicate_curve_points(tmp_path: Path) -> None:
    assert faults.curve_duplicates(tmp_path, runs=20, per_run=8) == CLEAN


@pytest.mark.slow
def test_reads_during_a_compaction_loop_never_fail_or_come_back_short(tmp_path: Path) -> None:
    assert faults.reads_during_compaction(tmp_path, queries=45, runs=90) == CLEAN


@pytest.mark.slow
def test_two_drivers_on_one_campaign_run_each_run_once(tmp_path: Path) -> None:
    assert faults.two_drivers(tmp_path, seeds=15) == CLEAN


@pytest.mark.slow
def test_a_killed_drivers_worker_leaves_without_storing_anything(tmp_path: Path) -> None:
    assert faults.orphaned_workers(tmp_path, kills=1) == CLEAN


@pytest.mark.slow
def test_part_merges_killed_at_random_moments_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    assert faults.killed_part_merges(tmp_path, rounds=4, runs=10) == CLEAN
