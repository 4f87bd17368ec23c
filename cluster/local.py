"""Run a campaign's missing runs on this machine.

Single-process runs go to a pool of ``jobs`` worker processes (each run isolated; a crashed worker
is replaced). Data-parallel runs (world_size > 1) are launched one at a time with torchrun or
mpiexec. Rows are written by the runs themselves, so killing the driver loses nothing stored;
running the campaign again runs only what is missing or failed.
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

from joulebench.harness.runner import failure_row, new_attempt_id, now_utc
from joulebench.harness.spec import ResolvedSpec
from joulebench.harness.store import Store
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


def run_local(specs: list[ResolvedSpec], results: Path, jobs: int = 1, plugins: list[str] | None = None,
              launcher: str = "torchrun", report: Report | None = None) -> list[dict[str, Any]]:
    plugins = list(plugins or [])
    single = [s for s in specs if s.world_size == 1]
    parallel = [s for s in specs if s.world_size > 1]
    threads = env_threads() or max(1, (os.cpu_count() or 1) // max(jobs, 1))
    local = threading.local()
    workers: list[Worker] = []
    lock = threading.Lock()
    out: list[dict[str, Any]] = []

    def one(spec: ResolvedSpec) -> None:
        if not hasattr(local, "worker"):
            local.worker = Worker(results, plugins, threads=threads)
            with lock:
                workers.append(local.worker)
        result = local.worker.run(spec)
        with lock:
            out.append(result)
            if report:
                report(result)

    try:
        with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
            list(pool.map(one, single))
    finally:
        for worker in workers:
            worker.close()
    for spec in parallel:
        result = run_parallel(spec, results, launcher)
        out.append(result)
        if report:
            report(result)
    return out

