"""Attempts never destroy results: every attempt is kept, the runs view picks one per key."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from joulebench.harness.store import Store
from joulebench.harness.store_compact import remove_if_identical
from joulebench.harness.store_files import identity

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(key: str, status: str = "ok", minutes: int = 0, finish_after_s: int = 5, **extra) -> dict:
    return {"run_key": key, "task": "ltsf", "method": "backprop", "preset": "tiny", "seed": 0,
            "status": status, "primary_metric": "mse", "primary_value": 0.5,
            "started_at": T0 + timedelta(minutes=minutes),
            "finished_at": T0 + timedelta(minutes=minutes, seconds=finish_after_s), **extra}


def runs(root: Path) -> list[tuple]:
    return Store(root).execute("SELECT run_key, status, started_at, attempts, failed_attempts FROM runs "
                               "ORDER BY run_key").fetchall()


def test_every_attempt_is_kept_and_the_newest_ok_one_is_shown(results: Path) -> None:
    store = Store(results)
    store.write_run(row("k", "failed", minutes=0))
    store.write_run(row("k", "ok", minutes=1, primary_value=0.3))
    store.write_run(row("k", "failed", minutes=2))
    assert len(list((results / "runs").rglob("*.parquet"))) == 3
    got = runs(results)
    assert [(r[0], r[1], r[3], r[4]) for r in got] == [("k", "ok", 3, 2)]
    assert store.execute("SELECT count(*) FROM attempts").fetchone() == (3,)
    assert store.stored_keys() == {"k"}
    assert store.stored_keys(("failed",)) == {"k"}


def test_an_orphaned_older_attempt_finishing_late_never_wins(results: Path) -> None:
    """The restart's attempt started later; the orphan's row, written after it, stays behind."""
    store = Store(results)
    store.write_run(row("k", "failed", minutes=5))          # the restart (its run failed)
    store.write_run(row("k", "failed", minutes=0, finish_after_s=900, error="orphan"))
    (shown,) = store.execute("SELECT started_at, error FROM runs").fetchall()
    assert shown == (T0 + timedelta(minutes=5), None)


def test_without_an_ok_attempt_the_newest_attempt_is_shown_and_not_stored(results: Path) -> None:
    store = Store(results)
    store.write_run(row("k", "failed", minutes=0))
    store.write_run(row("k", "timeout", minutes=1))
    assert [r[1] for r in runs(results)] == ["timeout"]
    assert store.stored_keys() == set()


def test_v1_files_count_as_one_attempt_each_and_read_with_the_new(results: Path) -> None:
    table = pa.table({"schema_version": pa.array([1], pa.int32()), "run_key": ["k"], "task": ["ltsf"],
                      "method": ["backprop"], "status": ["failed"],
                      "started_at": pa.array([T0], pa.timestamp("us", tz="UTC")),
                      "finished_at": pa.array([T0], pa.timestamp("us", tz="UTC"))})
    path = results / "runs" / "task=ltsf" / "k.parquet"  # the v1 name: one file per run_key
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    store = Store(results)
    assert store.stored_keys(("failed",)) == {"k"}
    store.write_run(row("k", "ok", minutes=3))
    assert [(r[1], r[3], r[4]) for r in runs(results)] == [("ok", 2, 1)]
    assert store.compact()["runs"] == 2
    assert [(r[1], r[3], r[4]) for r in runs(results)] == [("ok", 2, 1)]
    assert store.stored_keys() == {"k"}


def test_curves_follow_the_shown_attempt(results: Path) -> None:
    store = Store(results)
    for minutes, status, n in ((0, "ok", 3), (1, "failed", 1)):
        points = [{"run_key": "k", "task": "ltsf", "method": "backprop", "split": "val", "step": s,
                   "run_started_at": T0 + timedelta(minutes=minutes), "metrics_json": "{}"} for s in range(n)]
        store.write_run(row("k", status, minutes=minutes), points)
    assert store.execute("SELECT count(*) FROM curves").fetchone() == (3,)


def test_leaderboard_groups_by_cell_and_marks_the_latest_code(results: Path) -> None:
    store = Store(results)
    cells = {"c-old": ("lin", "h1", 0), "c-new": ("lin", "h2", 10)}
    for cell, (lineage, code, minutes) in cells.items():
        for seed in range(3):
            store.write_run(row(f"{cell}-{seed}", minutes=minutes + seed, seed=seed, cell_key=cell,
                                lineage_key=lineage, code_hash=code, key_scheme="v2",
                                hardware_class="cpu:test", budget_steps=40))
    store.write_run(row("c-new-0", "failed", minutes=1, seed=0, cell_key="c-new", lineage_key="lin",
                        code_hash="h2"))
    store.write_run(row("v1-run", minutes=0))  # no cell_key: grouped the v1 way
    board = store.execute("SELECT cell_key, seeds, failed_attempts, is_latest_code, key_scheme, "
                          "budget_steps, hardware_class FROM leaderboard ORDER BY cell_key").fetchall()
    assert [b[:5] for b in board[:2]] == [("c-new", 3, 1, True, "v2"), ("c-old", 3, 0, False, "v2")]
    assert board[0][5:] == (40, "cpu:test")
    assert board[2][0].startswith("v1:") and board[2][4] == "v1" and board[2][3] is True


def test_merged_files_stay_until_the_grace_period_and_read_once_meanwhile(results: Path) -> None:
    store = Store(results)
    paths = [store.write_run(row(f"k{i}")) for i in range(3)]
    assert store.compact()["runs"] == 3  # default grace: sources stay, readers skip them
    assert all(p.exists() for p in paths)
    assert store.execute("SELECT count(*) FROM attempts").fetchone() == (3,)
    assert store.compact()["runs"] == 0  # recorded sources are not merged again
    assert store.compact(grace_s=0)["runs"] == 0
    assert not any(p.exists() for p in paths)
    assert Store(results).execute("SELECT count(*) FROM attempts").fetchone() == (3,)


def test_a_source_changed_after_its_merge_is_kept_and_merged_again(results: Path) -> None:
    store = Store(results)
    path = store.write_run(row("k"))
    merged_as = identity(path)
    store.compact()
    tmp = path.with_name(".rewrite.tmp")
    tmp.write_bytes(path.read_bytes())
    os.replace(tmp, path)  # rewritten (as a perun import does): a new identity
    assert not remove_if_identical(results, path, merged_as) and path.exists()
    assert store.compact(grace_s=0)["runs"] == 1  # its record gone, the new content is merged
    assert not path.exists()
    assert Store(results).execute("SELECT count(*) FROM attempts").fetchone() == (1,)


def test_the_leaderboard_view_never_shares_a_median_between_estimated_and_measured_energy(results: Path) -> None:
    """One cell with estimated seeds (codecarbon) and a measured one (an imported perun report):
    the view gives one row per energy kind, as the leaderboard app does, never a mixed median."""
    store = Store(results)
    joules = {0: (100.0, True), 1: (110.0, True), 2: (500.0, False)}
    for seed, (j, estimated) in joules.items():
        store.write_run(row(f"c-{seed}", minutes=seed, seed=seed, cell_key="c", key_scheme="v2",
                            train_energy_j=j, energy_estimated=estimated,
                            energy_source="codecarbon estimate" if estimated else "perun rapl"))
    board = store.execute("SELECT energy_estimated, seeds, train_energy_j, energy_source FROM leaderboard "
                          "WHERE cell_key = 'c' ORDER BY energy_estimated").fetchall()
    assert board == [(False, 1, 500.0, "perun rapl"), (True, 2, 105.0, "codecarbon estimate")]
