"""Run a campaign's missing runs on this machine.

Single-process runs go to a pool of ``jobs`` worker processes (each run isolated; a crashed worker
is replaced). Data-parallel runs (world_size > 1) are launched one at a time with torchrun or
mpiexec. Rows are written by the runs themselves, so killing the driver loses nothing stored;
running the campaign again runs only what is missing or failed. Each run is claimed
(``Store.claim``) before it starts, so two drivers on one campaign run every run once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from joulebench.harness.identity import new_attempt_id
from joulebench.harness.rows import failure_row, now_utc
from joulebench.harness.spec import ResolvedSpec
from joulebench.harness.store import Store, StoreError
from joulebench.harness.worker import Worker, env_threads, summary

Report = Callable[[dict[str, Any]], None]


def launch_command(list_file: Path, results: Path, world_size: int, launcher: str) -> list[str]:
    """Every rank runs entry 0 of the list file (see ``joulebench.cluster.array``)."""
    entry = ["-m", "joulebench.cluster.array", str(list_file), "0", str(results)]
    if launcher == "mpiexec":
        mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
        return [mpiexec, "-n", str(world_size), sys.executable, *entry]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={world_size}", *entry]


def run_parallel(spec: ResolvedSpec, results: Path, launcher: str) -> dict[str, Any]:
    """One data-parallel run through a launcher; a row is stored whatever happens."""
    from joulebench.harness.store import Store

    started, t0 = now_utc(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="joulebench-launch-") as tmp:
        list_file = Path(tmp) / "runs.json"
        list_file.write_text(json.dumps([spec.model_dump(mode="json")]))
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}  # torchrun sets its own
        try:
            done = subprocess.run(launch_command(list_file, results, spec.world_size, launcher),
                                  capture_output=True, text=True, timeout=spec.timeout_s + 60, env=env)
            error = None if done.returncode in (0, 1) else \
                f"{launcher} exited with code {done.returncode}: {_last_line(done.stderr)}"
            status = "crashed"
        except subprocess.TimeoutExpired:
            error, status = f"run exceeded its timeout of {spec.timeout_s:.0f} s and was killed", "timeout"
    store = Store(results)
    stored = store.execute("SELECT * FROM runs WHERE run_key = ? AND started_at >= ?",
                           [spec.run_key, started]).df()
    if error is None and len(stored):
        return summary(stored.iloc[0].to_dict())
    row = failure_row(spec, status, error or f"{launcher} finished without storing a row", started,
                      new_attempt_id(), time.perf_counter() - t0)
    store.write_run(row)
    return summary(row)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def skipped(spec: ResolvedSpec, why: str) -> dict[str, Any]:
    """The summary of a run this driver did not run (``status`` ``skipped``)."""
    return {"run_key": spec.run_key, "task": spec.task, "method": spec.method, "preset": spec.preset,
            "seed": spec.seed, "status": "skipped", "error": why}


class WorkerPool:
    """``jobs`` workers for single-process runs, spawned by ``start`` before the driver plans the
    campaign so that their start-up overlaps the planning; each thread of the pool keeps one."""

    def __init__(self, results: Path, jobs: int = 1, plugins: list[str] | None = None) -> None:
        self.jobs = max(jobs, 1)
        threads = env_threads() or max(1, (os.cpu_count() or 1) // self.jobs)
        self.idle = [Worker(results, plugins, threads=threads) for _ in range(self.jobs)]
        self.workers = list(self.idle)
        self._lock = threading.Lock()
        self._local = threading.local()

    def start(self) -> WorkerPool:
        for worker in self.workers:
            worker.start()
        return self

    def _worker(self) -> Worker:
        if not hasattr(self._local, "worker"):
            with self._lock:
                self._local.worker = self.idle.pop()
        return self._local.worker

    def run(self, specs: list[ResolvedSpec], store: Store, report: Report | None = None,
            stop: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
        """Run each spec that this driver can claim; ``stop`` is asked before each launch."""
        out: list[dict[str, Any]] = []
        started = time.time()

        def one(spec: ResolvedSpec) -> None:
            if stop is not None and stop():
                return
            result = claimed_run(store, spec, started, self._worker().run)
            with self._lock:
                out.append(result)
                if report:
                    report(result)

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(one, specs))
        return out

    def close(self) -> None:
        """Stop every worker first, then wait: their exits overlap instead of queueing."""
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.close()


def claimed_run(store: Store, spec: ResolvedSpec, since: float,
                run: Callable[[ResolvedSpec], dict[str, Any]]) -> dict[str, Any]:
    """Run ``spec`` under its claim, or say why not (another driver holds it, or stored it)."""
    claim = store.claim(spec.run_key)
    if claim is None or store.has_ok(spec.task, spec.run_key, parts_since=since):
        if claim is not None:
            claim.release()
        return skipped(spec, "claimed by another driver" if claim is None else "stored meanwhile")
    with claim:
        try:
            return run(spec)
        except StoreError as exc:  # one unstorable run must not stop the campaign
            return {**skipped(spec, str(exc)), "status": "failed"}


def run_local(specs: list[ResolvedSpec], results: Path, jobs: int = 1, plugins: list[str] | None = None,
              launcher: str = "torchrun", report: Report | None = None,
              pool: WorkerPool | None = None, stop: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
    """Run ``specs`` here; ``pool`` (started early by the caller) is used and closed. ``stop`` is
    asked before each launch (an energy cap): once it says yes, no further run starts, and runs in
    flight finish and are stored."""
    single = [s for s in specs if s.world_size == 1]
    parallel = [s for s in specs if s.world_size > 1]
    pool = pool or WorkerPool(results, jobs, plugins)
    store = Store(results)
    try:
        out = pool.run(single, store, report, stop) if single else []
    finally:
        pool.close()
    for spec in parallel:
        if stop is not None and stop():
            break
        result = run_parallel(spec, results, launcher)
        out.append(result)
        if report:
            report(result)
    return out
