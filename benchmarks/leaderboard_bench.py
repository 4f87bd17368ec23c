"""Leaderboard speed on synthetic runs (targets at 1 M runs after compaction: first render <= 1 s,
filter change <= 200 ms), for this tree and, with ``--tree``, another one on the same store:

    .venv/bin/python benchmarks/leaderboard_bench.py --runs 100000 1000000 [--repeats 5] \
        [--tree /tmp/before] [--keep /tmp/stores]

The runs (schema-v2 rows, three curve points each) are written as chunked Parquet files in the
store's layout and merged by ``Store.compact()`` (``--keep DIR`` keeps the stores for the next
invocation). Each tree is measured in a process of its own (``--tree``: its packages come first
on the import path), rendering the app headless through Streamlit's AppTest.

What is timed is the app's script run: the server's work from a browser's request until the
page's elements are sent (a wrapper script times ``app.py``). AppTest's own wall time is printed
beside it; it adds AppTest's set-up (a fresh AppTest scans every installed distribution for
Streamlit components, seconds here, which a server does once at its start) and its polling.

First render: fresh Streamlit caches and a new DuckDB connection (a restarted server as far as
the app can tell; the imports are paid by the first repeat, printed apart), the landing page
(overview) and a task page (``?task=ltsf&preset=small``), "cold" (no persisted cells: everything
aggregated in this process) and "persisted" (the cells an earlier process stored for this state
of the store). Filter changes on the task page: the "hide estimated energy" toggle, a methods
selection and a task change. View changes: the Pareto front (the first one after a start reads
the runs) and the run detail.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from joulebench.harness import SCHEMA_VERSION
from joulebench.harness.schema import CURVES, RUNS
from joulebench.harness.store import Store, write_atomic

HERE = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "tasks", "methods", "leaderboard", "cluster")
TIMER = """import os, runpy, time
t0 = time.perf_counter()
try:
    runpy.run_path(os.environ["BENCH_APP"], run_name="__main__")
finally:
    os.environ["BENCH_SCRIPT_S"] = str(time.perf_counter() - t0)
"""
"""The app run by AppTest through this wrapper, which leaves the script's own time behind."""
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
    cpu = rng.choice(["Xeon A", "EPYC B"], n)
    columns = {
        "schema_version": pa.array(np.full(n, SCHEMA_VERSION, dtype=np.int32)),
        "run_key": pa.array([f"{i:020x}" for i in range(n)]),
        "attempt_id": pa.array([f"a{i:020x}" for i in range(n)]),
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
        "cpu_model": pa.array(cpu),
        "hardware_class": pa.array(np.char.add("cpu:", cpu)),
        "code_hash": pa.array(np.full(n, "c0")),
        "key_scheme": pa.array(np.full(n, "v2")),
        "started_at": pa.array(started, pa.timestamp("us", tz="UTC")),
        "finished_at": pa.array(finished, pa.timestamp("us", tz="UTC")),
    }
    # a cell: the experiment minus its seed (task, preset, method, parameters, hardware class)
    cells = [f"{t}|{p}|{m}|{lr}|{h}" for t, p, m, lr, h in zip(*(columns[c].to_pylist() for c in (
        "task", "preset", "method", "method_params", "hardware_class")))]
    columns["cell_key"] = pa.array(cells)
    columns["lineage_key"] = pa.array(cells)
    runs = pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in RUNS}, schema=RUNS)
    steps = np.tile([1, 2, 3], n)
    idx = np.repeat(np.arange(n), 3)
    curve_cols = {
        "schema_version": pa.array(np.full(3 * n, SCHEMA_VERSION, dtype=np.int32)),
        "run_key": runs["run_key"].take(pa.array(idx)), "task": runs["task"].take(pa.array(idx)),
        "attempt_id": runs["attempt_id"].take(pa.array(idx)),
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


def timed(action) -> tuple[float, float]:
    """(the app script's own seconds, AppTest's wall seconds) of one run."""
    os.environ.pop("BENCH_SCRIPT_S", None)
    t0 = time.perf_counter()
    at = action()
    wall = time.perf_counter() - t0
    assert not at.exception, at.exception
    return float(os.environ["BENCH_SCRIPT_S"]), wall


def forget_snapshots(root: Path) -> None:
    """No persisted cells (this tree keeps them beside the store, older trees in the cache)."""
    shutil.rmtree(root / ".leaderboard", ignore_errors=True)
    shutil.rmtree(Path(os.environ["JOULEBENCH_CACHE"]) / "leaderboard", ignore_errors=True)


def fresh(st, timer: Path, address: dict[str, str] | None = None):
    """A new server process as far as the app can tell: no cached query, no connection."""
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(timer), default_timeout=900)
    for key, value in (address or {}).items():
        at.query_params[key] = value
    return at


def measure(root: Path, repeats: int) -> dict[str, list[tuple[float, float]]]:
    """Every timing of one tree (the one this process imports) on the store at ``root``."""
    import streamlit as st

    timer = Path(os.environ["JOULEBENCH_CACHE"]) / "bench_timer.py"
    timer.parent.mkdir(parents=True, exist_ok=True)
    timer.write_text(TIMER)
    os.environ["JOULEBENCH_RESULTS"] = str(root)
    task = {"task": "ltsf", "preset": "small"}
    times: dict[str, list[tuple[float, float]]] = {}

    def add(name: str, value: tuple[float, float]) -> None:
        times.setdefault(name, []).append(value)

    for _ in range(repeats):
        forget_snapshots(root)
        add("first render, overview, cold", timed(fresh(st, timer).run))
        at = fresh(st, timer)
        add("first render, overview, persisted cells", timed(at.run))
        assert at.get("html")
        at = fresh(st, timer, task)
        add("first render, task page, persisted cells", timed(at.run))
        for name, kind, key, value in (("hide estimates", "toggle", "hide_estimates", True),
                                       ("methods", "multiselect", "methods", ["f3", "backprop"]),
                                       ("task", "selectbox", "task", "pet")):
            widget = getattr(at.sidebar, kind)(key=key)
            add(f"filter change ({name})", timed(lambda w=widget, v=value: w.set_value(v).run()))
            assert "ranking" in "".join(e.proto.body for e in at.get("html"))
        add("view change (Pareto front, first read of the runs)",
            timed(lambda a=at: a.radio(key="tab").set_value("pareto").run()))
        add("view change (run detail)", timed(lambda a=at: a.radio(key="tab").set_value("run").run()))
    return times


def target(name: str) -> str:
    return "<= 1 s" if name.startswith("first") else "<= 200 ms" if name.startswith("filter") else "no target"


def report(label: str, times: dict[str, list[tuple[float, float]]]) -> None:
    print(f"-- {label}  (script ms: median [first repeat]; AppTest wall ms median)")
    for name, values in times.items():
        script = [s * 1e3 for s, _ in values]
        wall = [w * 1e3 for _, w in values]
        print(f"   {name}: {statistics.median(script):.0f} [{script[0]:.0f}]  ({target(name)})   "
              f"AppTest {statistics.median(wall):.0f}")


def shim(tree: Path, folder: Path) -> Path:
    """A folder whose ``joulebench`` package is ``tree``'s (first on the path: it wins over the
    editable install of this tree)."""
    pkg = folder / "joulebench"
    pkg.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        if not (pkg / name).exists():
            (pkg / name).symlink_to(tree / name)
    return folder


def measure_tree(tree: Path, root: Path, repeats: int, tmp: Path) -> dict:
    """``measure`` in a process of its own, importing ``tree``'s packages."""
    env = {**os.environ, "JOULEBENCH_CACHE": str(tmp / f"cache-{abs(hash(str(tree)))}")}
    if tree != HERE:
        env["PYTHONPATH"] = str(shim(tree, tmp / f"shim-{abs(hash(str(tree)))}"))
    env["BENCH_APP"] = str(tree / "leaderboard" / "app.py")
    out = tmp / "times.json"
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import leaderboard_bench as b; "
            f"from pathlib import Path; import joulebench.leaderboard as lb; "
            f"assert Path(lb.__path__[0]).resolve() == Path({str(tree / 'leaderboard')!r}).resolve(), lb.__path__; "
            f"json.dump(b.measure(Path({str(root)!r}), {repeats}), open({str(out)!r}, 'w'))")
    done = subprocess.run([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"measuring {tree} failed:\n" + "\n".join(done.stderr.splitlines()[-15:]))
    return json.loads(out.read_text())


def store_of(n: int, keep: Path | None, tmp: Path) -> tuple[Path, str]:
    """A compacted synthetic store of ``n`` runs (kept under ``keep`` when given)."""
    root = (keep or tmp) / f"store-{n}"
    if (root / "runs" / "compacted").is_dir():
        return root, f"{n} runs: reused {root}"
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    synthetic_store(root, n)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    counts = Store(root).compact(grace_s=0)
    return root, (f"{n} runs, {counts['curves']} curve points; wrote chunks of {CHUNK} runs in {t_write:.1f} s, "
                  f"Store.compact() {time.perf_counter() - t0:.2f} s -> {counts['runs']} runs in one part")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, nargs="+", default=[100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tree", type=Path, help="another checkout to measure on the same stores (before)")
    parser.add_argument("--keep", type=Path, help="keep the generated stores here and reuse them")
    args = parser.parse_args()
    trees = ([("before: " + str(args.tree), args.tree.resolve())] if args.tree else []) + [("this tree", HERE)]
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.runs:
            root, made = store_of(n, args.keep, Path(tmp))
            print(made)
            for label, tree in trees:
                load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
                times = measure_tree(tree, root, args.repeats, Path(tmp))
                report(f"{n} runs, {label}; {args.repeats} repeats; {os.cpu_count()} CPUs; load before {load}, "
                       "after " + ", ".join(f"{x:.1f}" for x in os.getloadavg()), times)


if __name__ == "__main__":
    main()
