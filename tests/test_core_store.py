"""The store: atomic files, corrupt files skipped, concurrent writers, compaction, old schemas."""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from joulebench.harness.params import SpecError
from joulebench.harness.query import query_runs
from joulebench.harness.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(key: str, task: str = "ltsf", value: float = 0.5, minutes: int = 0, **extra) -> dict:
    return {"run_key": key, "task": task, "method": "backprop", "preset": "tiny", "seed": 0,
            "status": "ok", "primary_metric": "mse", "primary_value": value, "train_energy_j": 10.0,
            "energy_source": "estimate:codecarbon", "started_at": T0 + timedelta(minutes=minutes),
            "finished_at": T0 + timedelta(minutes=minutes, seconds=5), **extra}


def keys(root: Path) -> list[str]:
    return sorted(r[0] for r in Store(root).execute("SELECT run_key FROM runs").fetchall())


def test_empty_store_has_views_with_the_schema(results: Path) -> None:
    con = Store(results).connect()
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert "train_energy_j" in {r[0] for r in con.execute("DESCRIBE runs").fetchall()}


def test_corrupt_file_is_reported_and_skipped(results: Path) -> None:
    store = Store(results)
    paths = [store.write_run(row(f"k{i}")) for i in range(3)]
    good = paths[1]
    good.write_bytes(good.read_bytes()[:-20])  # truncated
    (results / "runs" / "task=ltsf" / "junk.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    assert keys(results) == ["k0", "k2"]
    store = Store(results)
    store.connect()
    assert {p.name for p, _ in store.bad_files} == {good.name, "junk.parquet"}


def test_damaged_middle_of_file_is_caught_by_the_slow_path(results: Path) -> None:
    store = Store(results)
    store.write_run(row("a"))
    path = store.write_run(row("b"))
    data = bytearray(path.read_bytes())
    data[8:200] = b"\x00" * 192  # magic bytes intact, contents destroyed
    path.write_bytes(bytes(data))
    assert keys(results) == ["a"]


def _writer(root: str, prefix: str, n: int) -> None:
    store = Store(Path(root))
    for i in range(n):
        store.write_run(row(f"{prefix}{i:03d}"))


def test_two_processes_writing_at_once_lose_nothing(results: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(results), p, 40)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert len(keys(results)) == 80


def test_rerun_of_a_key_supersedes_it_and_compaction_keeps_every_row(results: Path) -> None:
    store = Store(results)
    for i in range(5):
        store.write_run(row(f"k{i}", task="ltsf" if i % 2 else "pet"),
                        [{"run_key": f"k{i}", "task": "ltsf", "method": "backprop", "step": 1,
                          "run_started_at": T0, "metrics_json": "{}"}])
    assert store.compact() == {"runs": 5, "curves": 5}
    assert len(list((results / "runs").rglob("*.parquet"))) == 1
    store.write_run(row("k1", value=0.1, minutes=10))  # a newer run of a compacted key
    con = Store(results).connect()
    assert con.execute("SELECT count(*), min(primary_value) FROM runs").fetchone() == (5, 0.1)
    assert store.compact()["runs"] == 1  # incremental: only the new file is merged
    assert keys(results) == [f"k{i}" for i in range(5)]


def test_files_of_an_older_schema_still_read(results: Path) -> None:
    old = pa.table({"schema_version": pa.array([0], pa.int32()), "run_key": ["old"], "task": ["ltsf"],
                    "status": ["ok"], "primary_value": [0.7],
                    "finished_at": pa.array([T0], pa.timestamp("us", tz="UTC"))})
    path = results / "runs" / "task=ltsf" / "old.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(old, path)
    Store(results).write_run(row("new"))
    con = Store(results).connect()
    got = con.execute("SELECT run_key, train_energy_j FROM runs ORDER BY run_key").fetchall()
    assert got == [("new", 10.0), ("old", None)]


def test_results_filters_are_bound_not_pasted(results: Path) -> None:
    store = Store(results)
    store.write_run(row("a", value=0.2))
    store.write_run(row("b", value=0.9))
    assert list(query_runs(results, ["primary_value<0.5"])["run_key"]) == ["a"]
    assert query_runs(results, ["method=x' OR '1'='1"]).empty
    with pytest.raises(SpecError, match="unknown column"):
        query_runs(results, ["1=1; DROP TABLE runs; --=1"])


def test_task_column_is_the_row_not_the_folder_name(results: Path) -> None:
    """Folders are named ``task=<safe name>``; DuckDB must not read them as hive partitions."""
    store = Store(results)
    store.write_run(row("odd", task="my task/v2"))
    assert store.execute("SELECT task FROM runs").fetchall() == [("my task/v2",)]
    store.compact()
    assert store.execute("SELECT task FROM runs").fetchall() == [("my task/v2",)]
