"""The schema guard: wrong-typed files are quarantined, future versions refused, bad rows refused."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from joulebench.harness.query import query_runs
from joulebench.harness.store import Store, StoreError
from tests.test_store_attempts import row


def write_raw(results: Path, name: str, **columns) -> Path:
    path = results / "runs" / "task=ltsf" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def test_a_wrong_typed_file_is_quarantined_and_every_other_row_reads(results: Path) -> None:
    store = Store(results)
    for i in range(3):
        store.write_run(row(f"k{i}"))
    bad = write_raw(results, "bad.parquet", schema_version=pa.array([2], pa.int32()), run_key=["bad"],
                    task=["ltsf"], status=["ok"], primary_value=["0.5 (text)"])
    assert sorted(query_runs(results, [])["run_key"]) == ["k0", "k1", "k2"]
    assert not bad.exists()
    moved = list((results / "quarantine").rglob("bad.*.parquet"))
    assert len(moved) == 1
    reason = moved[0].with_name(moved[0].name + ".reason.txt").read_text()
    assert "primary_value is string" in reason
    assert len(query_runs(results, [], table="leaderboard")) == 1
    assert Store(results).compact()["runs"] == 3
    assert Store(results).execute("SELECT typeof(primary_value) FROM runs LIMIT 1").fetchone() == ("DOUBLE",)


def test_a_wrong_typed_file_is_never_merged(results: Path) -> None:
    Store(results).write_run(row("good"))
    write_raw(results, "bad.parquet", schema_version=pa.array([2], pa.int32()), run_key=["bad"],
              task=["ltsf"], status=["ok"], seed=["7"])
    store = Store(results)
    assert store.compact() == {"runs": 1, "curves": 0}
    assert store.execute("SELECT run_key FROM runs").fetchall() == [("good",)]
    assert any("seed is string" in why for _, why in store.bad_files)


def test_a_future_schema_is_refused_with_the_version_needed_and_left_in_place(results: Path) -> None:
    Store(results).write_run(row("good"))
    future = write_raw(results, "future.parquet", schema_version=pa.array([3], pa.int32()),
                       run_key=["f"], task=["ltsf"], status=["ok"], seed=["text in v3"],
                       harness_version=["0.4.0"])
    store = Store(results)
    assert store.execute("SELECT run_key FROM runs").fetchall() == [("good",)]
    (why,) = [w for p, w in store.bad_files if p == future]
    assert "schema v3" in why and "joulebench 0.4.0" in why
    store.compact()
    assert future.exists()  # not ours to move: the newer joulebench reads it


def test_an_unstorable_row_is_one_line_error_not_a_crash(results: Path) -> None:
    with pytest.raises(StoreError, match="cannot be stored"):
        Store(results).write_run(row("k", seed=2**63))
    assert not (results / "runs").exists() or not list((results / "runs").rglob("*.parquet"))


def test_a_row_with_a_wrong_type_is_refused_at_write(results: Path) -> None:
    with pytest.raises(StoreError, match="cannot be stored"):
        Store(results).write_run(row("k", primary_value="high"))
