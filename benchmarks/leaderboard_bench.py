"""Leaderboard speed on 100,000 synthetic runs (targets: first render <= 2 s, filter change <= 300 ms).

The runs are written as per-run-shaped rows in one compacted Parquet file (what ``joulebench
compact`` leaves), then the app is rendered headless through Streamlit's AppTest:

    .venv/bin/python benchmarks/leaderboard_bench.py [--runs 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from joulebench.harness.schema import RUNS
from joulebench.harness.store import write_atomic

APP = str(Path(__file__).resolve().parents[1] / "leaderboard" / "app.py")


def synthetic_store(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    tasks = np.array(["ltsf", "pet", "imagenet", "era5", "load"])
    methods = np.array(["backprop", "forward_gradient", "f3", "oialr", "prune", "ab_training"])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    columns = {
        "schema_version": pa.array(np.ones(n, dtype=np.int32)),
        "run_key": pa.array([f"{i:020x}" for i in range(n)]),
        "task": pa.array(tasks[rng.integers(0, len(tasks), n)]),
        "method": pa.array(methods[rng.integers(0, len(methods), n)]),
        "model": pa.array(np.full(n, "m")),
        "preset": pa.array(np.where(rng.random(n) < 0.5, "tiny", "small")),
        "seed": pa.array(rng.integers(0, 5, n)),
        "method_params": pa.array([json.dumps({"lr": float(x)}) for x in rng.choice([1e-3, 3e-3, 1e-2], n)]),
        "status": pa.array(np.where(rng.random(n) < 0.95, "ok", "failed")),
        "primary_metric": pa.array(np.full(n, "mse")),
        "primary_value": pa.array(rng.random(n)),
        "higher_is_better": pa.array(np.zeros(n, dtype=bool)),
        "train_energy_j": pa.array(rng.lognormal(5, 1, n)),
        "train_s": pa.array(rng.lognormal(2, 1, n)),
        "samples": pa.array(rng.integers(1_000, 100_000, n)),
        "energy_source": pa.array(np.full(n, "estimate:codecarbon")),
        "energy_estimated": pa.array(rng.random(n) < 0.7),
        "device_hours": pa.array(rng.random(n)),
        "world_size": pa.array(rng.choice([1, 2, 4], n)),
        "finished_at": pa.array([t0 + timedelta(seconds=int(i)) for i in range(n)],
                                pa.timestamp("us", tz="UTC")),
    }
    table = pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in RUNS}, schema=RUNS)
    write_atomic(table, root / "runs" / "compacted" / "part-bench.parquet")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthetic_store(root, args.runs)
        os.environ["JOULEBENCH_RESULTS"] = str(root)
        firsts, changes = [], []
        import streamlit as st

        for _ in range(args.repeats):
            st.cache_data.clear()  # every repeat is a first render: no cached query, no connection
            st.cache_resource.clear()
            t0 = time.perf_counter()
            at = AppTest.from_file(APP, default_timeout=120).run()
            firsts.append(time.perf_counter() - t0)
            assert not at.exception, at.exception
            assert len(at.dataframe[0].value) > 0
            t0 = time.perf_counter()
            at.sidebar.toggle(key="hide_estimates").set_value(True).run()
            changes.append(time.perf_counter() - t0)
            assert not at.exception, at.exception
    print(f"{args.runs} runs, {args.repeats} repeats (AppTest, headless)")
    print("the first repeat also pays this process's imports (streamlit, altair, duckdb, torch)")
    print(f"first render:  median {statistics.median(firsts):.3f} s  (target <= 2 s)  all: "
          + ", ".join(f"{x:.2f}" for x in firsts))
    print(f"filter change: median {statistics.median(changes) * 1e3:.0f} ms  (target <= 300 ms)  all: "
          + ", ".join(f"{x * 1e3:.0f}" for x in changes))


if __name__ == "__main__":
    main()
