"""Campaign overhead: a 100-run tiny LTSF campaign (seeds 0-99), run with ``-j 1`` and ``-j 2``.

Prints runs per minute and the share of the wall time (× jobs) spent inside the runs' own set-up,
training and evaluation (the ``setup_s + train_s + eval_s`` the rows record); the rest is the
driver's planning, worker start-up and shutdown, and the harness's per-run bookkeeping.
Each configuration gets a fresh result store, so every run executes.

    .venv/bin/python benchmarks/campaign_overhead.py [--runs 100] [--jobs 1 2] [--tree before=DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

CAMPAIGN = """name = "overhead"
[defaults]
seeds = [{seeds}]
[[grid]]
task = "ltsf"
methods = ["backprop"]
preset = "tiny"
"""


def inside_runs(results: Path) -> tuple[int, float]:
    rows = duckdb.connect().execute(f"SELECT count(*), sum(setup_s + train_s + eval_s) FROM "
                      f"read_parquet('{results}/runs/**/*.parquet', union_by_name=true, hive_partitioning=false) "
                      f"WHERE status = 'ok' AND setup_s IS NOT NULL").fetchone()
    return int(rows[0]), float(rows[1] or 0.0)


def breakdown(results: Path, t0_epoch: float, t1_epoch: float) -> str:
    """Where the wall time outside the runs' phases goes (``-j 1`` reads it directly): before the
    first run starts (driver start, planning, worker start-up), inside a run's wall but outside its
    phases (meter reads, row building and writing), between runs (claim, hand-off to the worker),
    and after the last run (shutdown)."""
    rows = duckdb.connect().execute(
        f"SELECT epoch(started_at) AS s, wall_s, setup_s + train_s + eval_s AS phases FROM "
        f"read_parquet('{results}/runs/**/*.parquet', union_by_name=true, hive_partitioning=false) "
        f"WHERE status = 'ok' ORDER BY started_at").fetchall()
    if not rows:
        return "no rows"
    ends = [s + wall for s, wall, _ in rows]
    gaps = [max(0.0, rows[i + 1][0] - ends[i]) for i in range(len(rows) - 1)]
    parts = {"before first run": rows[0][0] - t0_epoch,
             "in run, outside phases": sum(wall - phases for _, wall, phases in rows),
             "between runs": sum(gaps),
             "after last run": t1_epoch - max(ends)}
    return "; ".join(f"{k} {v:5.1f} s" for k, v in parts.items())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR")
    args = parser.parse_args()
    trees = {"now": os.environ.get("PYTHONPATH", "")}
    trees.update(t.partition("=")[::2] for t in args.tree)
    print(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / "overhead.toml"
        toml.write_text(CAMPAIGN.format(seeds=", ".join(map(str, range(args.runs)))))
        walls: dict[tuple[str, int], float] = {}
        for jobs in args.jobs:
            for name, path in trees.items():
                results = Path(tmp) / f"r-{name}-{jobs}"
                env = {**os.environ, "PYTHONPATH": path, "TQDM_DISABLE": "1",
                       "JOULEBENCH_CACHE": str(Path(tmp) / f"cache-{name}"),
                       "OMP_NUM_THREADS": "1"}
                env.pop("JOULEBENCH_THREADS", None)  # the campaign splits the cores over its jobs
                if jobs == args.jobs[0]:  # build the plugin manifest outside the measured wall
                    subprocess.run([sys.executable, "-m", "joulebench.harness.cli", "list"], env=env,
                                   capture_output=True, check=True)
                t0, t0_epoch = time.perf_counter(), time.time()
                done = subprocess.run([sys.executable, "-m", "joulebench.harness.cli", "campaign", "run",
                                       str(toml), "-j", str(jobs), "--results", str(results)],
                                      env=env, capture_output=True, text=True)
                wall, t1_epoch = time.perf_counter() - t0, time.time()
                if done.returncode != 0:
                    raise SystemExit(done.stderr[-800:])
                n, inside = inside_runs(results)
                walls[(name, jobs)] = wall
                print(f"{name:>8} -j {jobs}: {n} runs in {wall:6.1f} s = {n / wall * 60:6.0f} runs/min; "
                      f"inside runs {inside / (wall * jobs):5.1%} of wall x jobs", flush=True)
                if jobs == 1:
                    print(f"{'':>8}   outside the phases: {breakdown(results, t0_epoch, t1_epoch)}", flush=True)
        for name in trees:
            if (name, 1) in walls and (name, 2) in walls:
                print(f"{name:>8}: -j 2 speed-up over -j 1: {walls[(name, 1)] / walls[(name, 2)]:.2f}x")
    print(f"load after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
