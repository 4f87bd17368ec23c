"""Small parts are merged into larger ones without losing or duplicating a row, even when the
merging compaction is killed (SIGKILL) in the middle."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from joulebench.harness.store import Store
from joulebench.harness.store_compact import Tiers
from joulebench.harness.store_files import part_files

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EAGER = Tiers(small_part_bytes=1 << 30, min_small_parts=2, tier_bytes=1 << 30)
"""Every part counts as small: each compaction merges the parts of the one before."""
POINTS = 3


def write(store: Store, key: str, status: str = "ok", minute: int = 0) -> None:
    started = T0 + timedelta(minutes=minute)
    row = {"run_key": key, "task": "ltsf", "method": "backprop", "preset": "tiny", "seed": 0,
           "status": status, "primary_metric": "mse", "primary_value": 0.5, "started_at": started,
           "finished_at": started + timedelta(seconds=5)}
    curves = [{"run_key": key, "split": "val", "step": s, "epoch": 0, "samples": s, "train_s": float(s),
               "train_energy_j": float(s), "run_started_at": started, "metrics_json": "{}"}
              for s in range(POINTS)]
    store.write_run(row, curves)


def counts(root: Path) -> dict[str, int]:
    """Raw rows in the files readers list (duplicates would show here) and what the views show."""
    store = Store(root)
    one = lambda sql: store.execute(sql).fetchone()[0]  # noqa: E731
    return {"raw_attempts": one("SELECT count(*) FROM runs_all"), "attempts": one("SELECT count(*) FROM attempts"),
            "ok_keys": len(store.stored_keys()), "raw_points": one("SELECT count(*) FROM curves_all"),
            "points": one("SELECT count(*) FROM curves")}


def test_repeated_compactions_merge_parts_and_keep_every_row_once(results: Path) -> None:
    store, attempts, keys = Store(results), 0, set()
    for rnd in range(5):
        for i in range(4):
            write(store, f"k{rnd}-{i}", minute=rnd)
            keys.add(f"k{rnd}-{i}")
        write(store, "k0-0", "failed", minute=10 + rnd)  # retries of one key arrive in every round
        attempts += 5
        store.compact(grace_s=0, tiers=EAGER)
        assert len(part_files(results / "runs")) <= 2  # the earlier parts were merged and removed
        assert counts(results) == {"raw_attempts": attempts, "attempts": attempts, "ok_keys": len(keys),
                                   "raw_points": attempts * POINTS, "points": len(keys) * POINTS}


def test_merged_parts_stay_readable_until_the_grace_period_ends(results: Path) -> None:
    store = Store(results)
    for rnd in range(3):
        write(store, f"k{rnd}")
        store.compact(tiers=Tiers(min_small_parts=10))  # default grace: parts only
    assert len(part_files(results / "runs")) == 3
    store.compact(tiers=EAGER)
    assert len(part_files(results / "runs")) == 4  # the three small ones wait out the grace period
    assert len(Store(results).parts("runs")) == 1  # readers use the merged one only
    assert counts(results)["raw_attempts"] == 3
    store.compact(grace_s=0, tiers=EAGER)
    assert len(part_files(results / "runs")) == 1
    assert not [p.name for p in (results / "runs" / "compacted").iterdir() if p.name.endswith(".tmp")]


KILLER = """
import os, signal, sys
from pathlib import Path
from joulebench.harness import store_compact
from joulebench.harness.store import Store
point = sys.argv[2]
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
setattr(store_compact, point, die)
Store(Path(sys.argv[1])).compact(grace_s=0, tiers=store_compact.Tiers(1 << 30, 2, 1 << 30))
"""


@pytest.mark.parametrize("point", ["check_file", "write_text_atomic"])
def test_a_part_merge_killed_midway_loses_and_duplicates_nothing(results: Path, point: str) -> None:
    """SIGKILL after the merged part is written but before it is checked and renamed (a temporary
    file is left), or after the rename but before its record (its sources are read twice)."""
    store = Store(results)
    for rnd in range(3):
        for i in range(3):
            write(store, f"k{rnd}-{i}")
        store.compact(grace_s=0, tiers=Tiers(min_small_parts=10))
    want = {"raw_attempts": 9, "attempts": 9, "ok_keys": 9, "raw_points": 9 * POINTS, "points": 9 * POINTS}
    assert counts(results) == want
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", KILLER, str(results), point], env=env, timeout=300)
    assert done.returncode == -9
    got = counts(results)
    assert {k: got[k] for k in ("attempts", "ok_keys", "points")} == \
        {k: want[k] for k in ("attempts", "ok_keys", "points")}  # the views read each row once
    store.compact(grace_s=0, tiers=EAGER)  # breaks the dead compaction's lock, merges again
    assert counts(results) == want  # the duplicates of the killed merge are gone from the files
    assert len(part_files(results / "runs")) == 1
    assert not [p.name for p in (results / "runs" / "compacted").iterdir() if p.name.endswith(".tmp")]
