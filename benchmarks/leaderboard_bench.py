"""Leaderboard speed on synthetic runs (targets at 1 M runs after compaction: first render <= 1 s,
filter change <= 200 ms).

The runs (and three curve points per run) are written as chunked Parquet files in the store's
layout, merged by ``Store.compact()`` (what ``joulebench compact`` does), then the app is rendered
headless through Streamlit's AppTest:

    .venv/bin/python benchmarks/leaderboard_bench.py [--runs 100000] [--repeats 5]

First render: fresh Streamlit caches and a new DuckDB connection, the landing page (overview) and
the address of a task page (``?task=ltsf&preset=small``), both "cold" (the per-cell aggregation
done in this process) and "cached" (the cells an earlier server process stored for this state of
the store, as a restarted server finds them). Filter changes on the task page: the "hide
estimated energy" toggle, a methods selection and a task change (their queries miss Streamlit's
cache). View changes: the Pareto front and the run detail, the first one after a start paying
the build of the run table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from joulebench.harness.cache import cache_root
from joulebench.harness.schema import CURVES, RUNS
from joulebench.harness.store import Store, write_atomic

APP = str(Path(__file__).resolve().parents[1] / "leaderboard" / "app.py")
TASKS = np.array(["ltsf", "pet", "imagenet", "era5", "load"])
METHODS = np.array(["backprop", "forward_gradient", "f3", "oialr", "prune", "ab_training"])
CHUNK = 5000


def synthetic_store(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    train_s = rng.lognormal(2, 1, n)
    finished = [t0 + timedelta(seconds=int(i) * 10) for i in range(n)]
    started = [f - timedelta(seconds=float(s)) for f, s in zip(finished, train_s)]
    energy = rng.lognormal(5, 1, n)
    world = rng.choice([1, 2, 4, 8], n)
    columns = {
        "schema_version": pa.array(np.ones(n, dtype=np.int32)),
        "run_key": pa.array([f"{i:020x}" for i in range(n)]),
        "task": pa.array(TASKS[rng.integers(0, len(TASKS), n)]),
        "method": pa.array(METHODS[rng.integers(0, len(METHODS), n)]),
        "model": pa.array(np.full(n, "m")),
        "preset": pa.array(np.where(rng.random(n) < 0.5, "tiny", "small")),
        "seed": pa.array(rng.integers(0, 5, n)),
        "method_params": pa.array([json.dumps({"lr": float(x)}) for x in rng.choice([1e-3, 3e-3, 1e-2], n)]),
        "task_params": pa.array(np.full(n, "{}")),
        "campaign": pa.array(rng.choice(["", "demo", "scaling"], n)),
        "status": pa.array(np.where(rng.random(n) < 0.95, "ok", "failed")),
        "primary_metric": pa.array(np.full(n, "mse")),
        "primary_value": pa.array(rng.random(n)),
        "higher_is_better": pa.array(np.zeros(n, dtype=bool)),
        "train_energy_j": pa.array(energy),
        "train_s": pa.array(train_s),
        "samples": pa.array(rng.integers(1_000, 100_000, n)),
        "gradient_updates": pa.array(rng.integers(10, 1_000, n)),
        "energy_source": pa.array(np.full(n, "estimate:codecarbon")),
        "energy_estimated": pa.array(rng.random(n) < 0.7),
        "device_hours": pa.array(train_s * world / 3600),
        "world_size": pa.array(world),
        "global_batch": pa.array(world * 32),
        "local_batch": pa.array(np.full(n, 32)),
        "cpu_model": pa.array(rng.choice(["Xeon A", "EPYC B"], n)),
        "started_at": pa.array(started, pa.timestamp("us", tz="UTC")),
        "finished_at": pa.array(finished, pa.timestamp("us", tz="UTC")),
    }
    runs = pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in RUNS}, schema=RUNS)
    steps = np.tile([1, 2, 3], n)
    idx = np.repeat(np.arange(n), 3)
    curve_cols = {
        "schema_version": pa.array(np.ones(3 * n, dtype=np.int32)),
        "run_key": runs["run_key"].take(pa.array(idx)), "task": runs["task"].take(pa.array(idx)),
        "method": runs["method"].take(pa.array(idx)), "run_started_at": runs["started_at"].take(pa.array(idx)),
        "split": pa.array(np.full(3 * n, "val")), "step": pa.array(steps * 100),
        "train_s": pa.array(train_s[idx] * steps / 3), "train_energy_j": pa.array(energy[idx] * steps / 3),
        "metrics_json": pa.array([json.dumps({"mse": round(1.0 / s, 4)}) for s in steps]),
    }
    curves = pa.table({f.name: curve_cols.get(f.name, pa.nulls(3 * n, f.type)) for f in CURVES}, schema=CURVES)
    # the store's layout (DuckDB reads the task from the folder name), a chunk of runs per file
    task_of_run = runs["task"].to_numpy(zero_copy_only=False)
    for task in TASKS:
        mine = np.flatnonzero(task_of_run == task)
        for i in range(0, len(mine), CHUNK):
            rows = mine[i:i + CHUNK]
            points = (3 * rows[:, None] + np.arange(3)).ravel()
            write_atomic(runs.take(rows), root / "runs" / f"task={task}" / f"chunk-{i}.parquet")
            write_atomic(curves.take(points), root / "curves" / f"task={task}" / f"chunk-{i}.parquet")


def timed(action) -> float:
    t0 = time.perf_counter()
    at = action()
    elapsed = time.perf_counter() - t0
    assert not at.exception, at.exception
    return elapsed


def fresh(st, address: dict[str, str] | None = None, forget_cells: bool = False):
    """A new server process as far as the app can tell: no cached query, no connection."""
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    st.cache_resource.clear()
    if forget_cells:
        shutil.rmtree(cache_root("leaderboard"), ignore_errors=True)
    at = AppTest.from_file(APP, default_timeout=900)
    for key, value in (address or {}).items():
        at.query_params[key] = value
    return at


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import streamlit as st

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        os.environ["JOULEBENCH_CACHE"] = str(Path(tmp) / "cache")
        t0 = time.perf_counter()
        synthetic_store(root, args.runs)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        counts = Store(root).compact()
        t_compact = time.perf_counter() - t0
        os.environ["JOULEBENCH_RESULTS"] = str(root)
        task = {"task": "ltsf", "preset": "small"}
        times: dict[str, list[float]] = {k: [] for k in (
            "first render, overview, cold", "first render, overview, cached cells",
            "first render, task page, cached cells", "filter change (hide estimates)", "filter change (methods)",
            "filter change (task)", "view change (Pareto front, builds the run table)", "view change (run detail)")}
        for _ in range(args.repeats):
            at = fresh(st, forget_cells=True)
            times["first render, overview, cold"].append(timed(at.run))
            at = fresh(st)
            times["first render, overview, cached cells"].append(timed(at.run))
            assert at.get("html")
            at = fresh(st, task)
            times["first render, task page, cached cells"].append(timed(at.run))
            for name, kind, key, value in (("hide estimates", "toggle", "hide_estimates", True),
                                           ("methods", "multiselect", "methods", ["f3", "backprop"]),
                                           ("task", "selectbox", "task", "pet")):
                widget = getattr(at.sidebar, kind)(key=key)
                times[f"filter change ({name})"].append(timed(lambda w=widget, v=value: w.set_value(v).run()))
                assert "ranking" in "".join(e.proto.body for e in at.get("html"))
            times["view change (Pareto front, builds the run table)"].append(
                timed(lambda a=at: a.radio(key="tab").set_value("pareto").run()))
            times["view change (run detail)"].append(timed(lambda a=at: a.radio(key="tab").set_value("run").run()))
    print(f"{args.runs} runs, {counts['curves']} curve points; wrote chunks of {CHUNK} runs "
          f"in {t_write:.1f} s, Store.compact() {t_compact:.2f} s -> {counts['runs']} runs in one part")
    print(f"{args.repeats} repeats through AppTest, headless; {os.cpu_count()} CPUs; load average "
          + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    print("the first repeat also pays this process's imports (streamlit, duckdb; torch through the task and method registry)")
    for name, values in times.items():
        target = "<= 1 s" if name.startswith("first") else "<= 200 ms" if name.startswith("filter") else "no target"
        print(f"{name}: median {statistics.median(values) * 1e3:.0f} ms  ({target})  all: "
              + ", ".join(f"{x * 1e3:.0f}" for x in values))


if __name__ == "__main__":
    main()
