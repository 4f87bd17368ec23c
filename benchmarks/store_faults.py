"""The store's fault scenarios of issue 16, with fixed counts; prints one line per scenario.

    .venv/bin/python benchmarks/store_faults.py [--only NAME ...] [--trials 3]

Each scenario returns ``lost`` (results finished but not stored ok), ``duplicated`` (extra rows
or curve points a reader sees, or runs executed twice) and ``failed_reads`` (reads that raised or
returned fewer runs than were stored before they began). Writers, compactions and readers are
separate processes, as on a cluster; ``tests/test_store_faults.py`` runs the same functions.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from joulebench.harness.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CTX = mp.get_context("spawn")
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
       "JOULEBENCH_THREADS": "1", "TQDM_DISABLE": "1"}


def row(key: str, status: str, minutes: int) -> dict:
    return {"run_key": key, "task": "ltsf", "method": "backprop", "preset": "tiny", "seed": 0,
            "status": status, "primary_metric": "mse", "primary_value": 0.5 if status == "ok" else None,
            "started_at": T0 + timedelta(minutes=minutes), "finished_at": T0 + timedelta(minutes=minutes, seconds=3)}


def points(key: str, minutes: int, n: int) -> list[dict]:
    return [{"run_key": key, "task": "ltsf", "method": "backprop", "split": "val", "step": s,
             "run_started_at": T0 + timedelta(minutes=minutes), "metrics_json": "{}"} for s in range(n)]


def _compact_loop(root: str, stop, every_s: float) -> None:
    store = Store(Path(root))
    while not stop.is_set():
        try:
            store.compact()
        except Exception as exc:  # busy lock: another compaction runs; anything else is reported
            if "another compaction" not in str(exc):
                print(f"compaction error: {exc}", file=sys.stderr)
        time.sleep(every_s)


def _writer(root: str, keys: list[str], status: str, minutes: int, written=None, curves: int = 0) -> None:
    store = Store(Path(root))
    for key in keys:
        store.write_run(row(key, status, minutes), points(key, minutes, curves) if curves else None)
        if written is not None:
            with written.get_lock():
                written.value += 1


def _start(target, *args) -> mp.Process:
    proc = CTX.Process(target=target, args=args)
    proc.start()
    return proc


def retries_under_compaction(root: Path, runs: int = 240, every_s: float = 0.05) -> dict[str, int]:
    """Item 1: failed runs retried (ok) while compaction loops."""
    keys = [f"r{i:04d}" for i in range(runs)]
    _writer(str(root), keys, "failed", 0)
    stop = CTX.Event()
    loop = _start(_compact_loop, str(root), stop, every_s)
    writer = _start(_writer, str(root), keys, "ok", 1)
    writer.join()
    stop.set()
    loop.join()
    store = Store(root)
    store.compact()
    shown = dict(store.execute("SELECT run_key, status FROM runs").fetchall())
    attempts = store.execute("SELECT count(*) FROM attempts").fetchone()[0]
    return {"lost": sum(shown.get(k) != "ok" for k in keys) + len(set(keys) - store.stored_keys()),
            "duplicated": attempts - 2 * runs, "failed_reads": 0}


def _compact_once(root: str) -> None:
    try:
        Store(Path(root)).compact()
    except Exception as exc:
        if "another compaction" not in str(exc):
            raise


def _compact_killed_after_part(root: str) -> None:
    """A compaction that dies (like kill -9) after renaming its first part into place, before it
    records the part's sources (so the next compaction merges them again)."""
    from joulebench.harness import store_compact

    store_compact.write_text_atomic = lambda *a, **k: os._exit(9)
    Store(Path(root)).compact()


def curve_duplicates(root: Path, runs: int = 90, per_run: int = 8) -> dict[str, int]:
    """Item 4: two compactions at once, then one killed after writing its part, then another."""
    keys = [f"c{i:03d}" for i in range(runs)]
    _writer(str(root), keys, "ok", 0, curves=per_run)
    both = [_start(_compact_once, str(root)) for _ in range(2)]
    for proc in both:
        proc.join()
    _writer(str(root), [f"d{i:03d}" for i in range(runs)], "ok", 0, curves=per_run)
    killed = _start(_compact_killed_after_part, str(root))
    killed.join()
    _compact_once(str(root))
    store = Store(root)
    seen = store.execute("SELECT count(*) FROM curves").fetchone()[0]
    distinct = store.execute("SELECT count(*) FROM (SELECT DISTINCT run_key, attempt_id, split, step FROM curves)"
                             ).fetchone()[0]
    run_rows = store.execute("SELECT count(*) FROM runs").fetchone()[0]
    return {"lost": 2 * runs * per_run - distinct + 2 * runs - run_rows,
            "duplicated": seen - distinct, "failed_reads": 0}


def reads_during_compaction(root: Path, queries: int = 300, runs: int = 600) -> dict[str, int]:
    """Item 5: stored_keys, results and leaderboard queries while runs arrive and compaction loops."""
    from joulebench.harness.query import query_runs

    written = CTX.Value("i", 0)
    stop = CTX.Event()
    loop = _start(_compact_loop, str(root), stop, 0.05)
    writer = _start(_writer, str(root), [f"q{i:04d}" for i in range(runs)], "ok", 0, written)
    failed = 0
    for i in range(queries):
        before = written.value
        try:
            if i % 3 == 0:
                got = len(Store(root).stored_keys())
            elif i % 3 == 1:
                got = len(query_runs(root, [], limit=0))
            else:
                board = query_runs(root, [], table="leaderboard", limit=0)
                got = int(board["runs"].sum()) if len(board) else 0  # runs per cell (seeds: distinct seeds)
        except Exception as exc:
            print(f"read {i} failed: {str(exc).splitlines()[0]}", file=sys.stderr)
            failed += 1
            continue
        if got < before:
            print(f"read {i} ({('stored_keys', 'results', 'leaderboard')[i % 3]}) short: {got} < {before}",
                  file=sys.stderr)
        failed += got < before
    writer.join()
    stop.set()
    loop.join()
    return {"lost": runs - len(Store(root).stored_keys()), "duplicated": 0, "failed_reads": failed}


def _compact_eager(root: str) -> None:
    """A compaction that merges every part of the one before into one (tiers at their smallest)."""
    from joulebench.harness.store_compact import Tiers

    Store(Path(root)).compact(grace_s=0, tiers=Tiers(1 << 30, 2, 1 << 30))


def killed_part_merges(root: Path, rounds: int = 8, runs: int = 20, per_run: int = 4,
                       seed: int = 0) -> dict[str, int]:
    """Small parts merged into larger ones, each merging compaction killed (SIGKILL) at a random
    moment: per round new runs become a part, a compaction merging all parts is killed after
    0-1.5 s; then one compaction finishes. Counts rows in the files themselves (``runs_all``,
    ``curves_all``): a row merged twice would show there, not only in the views."""
    import random

    rng, keys = random.Random(seed), []
    for rnd in range(rounds):
        batch = [f"m{rnd:02d}-{i:03d}" for i in range(runs)]
        _writer(str(root), batch, "ok", rnd, curves=per_run)
        keys += batch
        Store(root).compact(grace_s=0)
        proc = _start(_compact_eager, str(root))
        proc.join(rng.uniform(0.0, 1.5))
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    _compact_eager(str(root))
    store = Store(root)
    raw_runs = store.execute("SELECT count(*) FROM runs_all").fetchone()[0]
    raw_points = store.execute("SELECT count(*) FROM curves_all").fetchone()[0]
    shown = store.stored_keys()
    return {"lost": len(set(keys) - shown), "duplicated": raw_runs - len(keys) + raw_points - len(keys) * per_run,
            "failed_reads": 0}


CAMPAIGN = """
name = "two-drivers"
[defaults]
preset = "tiny"
seeds = {seeds}
budget = {{ steps = {steps} }}
[[grid]]
task = "ltsf"
methods = ["backprop"]
task_params = {{ batch_size = [16, 32] }}
"""


def _campaign(root: Path, seeds: int, steps: int) -> Path:
    path = root / "campaign.toml"
    path.write_text(CAMPAIGN.format(seeds=list(range(seeds)), steps=steps))
    return path


def _driver(campaign: Path, results: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "joulebench.harness.cli", "campaign", "run", str(campaign),
                             "--results", str(results)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def two_drivers(root: Path, seeds: int = 15) -> dict[str, int]:
    """Item 6: two drivers on one 30-run campaign execute each run once."""
    campaign, results = _campaign(root, seeds, 2), root / "results"
    drivers = [_driver(campaign, results) for _ in range(2)]
    for d in drivers:
        d.communicate(timeout=600)
    store = Store(results)
    executed = store.execute("SELECT count(*) FROM attempts").fetchone()[0]
    return {"lost": 2 * seeds - len(store.stored_keys()), "duplicated": executed - 2 * seeds, "failed_reads": 0}


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


def orphaned_workers(root: Path, kills: int = 3, steps: int = 400) -> dict[str, int]:
    """Item 3: kill -9 the driver mid-run; its worker must leave without storing anything."""
    campaign, results = _campaign(root, 2, steps), root / "results"
    orphan_rows = lingering = 0
    for _ in range(kills):
        driver = _driver(campaign, results)
        files = lambda: len(list((results / "runs").rglob("*.parquet")))  # noqa: E731
        before, deadline = files(), time.time() + 300
        while time.time() < deadline and files() == before and driver.poll() is None:
            time.sleep(0.05)
        workers = _children(driver.pid)
        at_kill = files()
        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate()
        gone = time.time() + 5
        while time.time() < gone and any(_alive(w) for w in workers):
            time.sleep(0.1)
        lingering += sum(_alive(w) for w in workers)
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        time.sleep(1.0)
        orphan_rows += files() - at_kill
    done = _driver(campaign, results)
    done.communicate(timeout=600)
    store = Store(results)
    bad = store.execute("SELECT count(*) FROM runs WHERE status <> 'ok'").fetchone()[0]
    return {"lost": 4 - len(store.stored_keys()) + bad, "duplicated": orphan_rows + lingering, "failed_reads": 0}


SCENARIOS = {"retries_under_compaction": retries_under_compaction, "curve_duplicates": curve_duplicates,
             "reads_during_compaction": reads_during_compaction, "two_drivers": two_drivers,
             "orphaned_workers": orphaned_workers, "killed_part_merges": killed_part_merges}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    for name in args.only:
        trials = args.trials if name in ("retries_under_compaction", "curve_duplicates",
                                         "killed_part_merges") else 1
        for trial in range(trials):
            with tempfile.TemporaryDirectory(prefix="joulebench-faults-") as tmp:
                t0 = time.perf_counter()
                got = SCENARIOS[name](Path(tmp), seed=trial) if name == "killed_part_merges" else \
                    SCENARIOS[name](Path(tmp))
                line = " ".join(f"{k}={v}" for k, v in got.items())
                print(f"{name} trial {trial + 1}: {line}  ({time.perf_counter() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
