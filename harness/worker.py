"""Worker processes: each run executes in a worker, so a crash or ``os._exit`` kills only that run.

A worker is started once (paying for torch's import and the energy tracker's start-up) and then
runs spec after spec. If it dies or overruns the run's timeout, the driver writes the run's row
with status ``crashed`` or ``timeout`` and starts a fresh worker for the next run.

Start-up and shutdown stay off the critical path: ``start()`` spawns the process at once, so its
imports overlap the driver's own work (resolving specs, reading the store); the process imports
only the harness at start and each run's task and method when the run arrives (the registry knows
the others from their manifest). On ``close`` it stops its meters and leaves without tearing down
torch's interpreter state, which took most of a second and held up the driver's exit.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joulebench.harness.identity import new_attempt_id
from joulebench.harness.spec import ResolvedSpec

SUMMARY_KEYS = ("run_key", "task", "method", "preset", "seed", "status", "error", "primary_metric",
                "primary_value", "wall_s", "train_s", "train_energy_j", "total_energy_j", "energy_source",
                "energy_estimated", "co2_g", "samples", "gradient_updates", "params_read",
                "task_params", "method_params", "model")


def summary(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in SUMMARY_KEYS}


def exit_if_orphaned(parent: int) -> None:
    """A worker whose driver died leaves at once, storing nothing: the driver's restart runs the
    run again, and a late row from an orphan must not compete with it (after ``kill -9`` of the
    driver, 5 of 14 orphans stored a broken-pipe ``failed`` row)."""
    if os.getppid() != parent:
        os._exit(0)


def watch_parent(parent: int, every_s: float = 0.5) -> None:
    """A daemon thread that ends this worker when its driver process is gone (Linux, macOS)."""
    def loop() -> None:
        while True:
            exit_if_orphaned(parent)
            time.sleep(every_s)

    threading.Thread(target=loop, daemon=True, name="joulebench-parent-watch").start()


def _worker_main(conn, results: str, plugins: list[str], region: str | None,
                 threads: int | None = None, parent: int | None = None) -> None:
    parent = parent or os.getppid()
    watch_parent(parent)
    os.environ.setdefault("TQDM_DISABLE", "1")
    meters = WorkerMeters(region)  # the cpu meter starts in a thread while torch imports
    if threads:
        # several workers on one machine: their thread pools must not fight over the cores
        # (oversubscribed OpenMP pools made runs 20x slower here)
        import torch

        torch.set_num_threads(threads)
    from joulebench.harness.registry import registry
    from joulebench.harness.runner import Runner
    from joulebench.harness.store import Store

    registry(plugins)
    warm_up()
    store = Store(Path(results), before_write=lambda: exit_if_orphaned(parent))
    while True:
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            _leave()  # rows are stored; meters hold nothing unsaved (see ``_leave``)
        spec_json, attempt_id = message
        spec = ResolvedSpec.model_validate_json(spec_json)
        exit_if_orphaned(parent)
        try:
            def progress(done: int, planned: int | None) -> None:
                try:
                    conn.send(("progress", done, planned))
                except OSError:  # broken pipe: the driver is gone, and so is this run
                    os._exit(0)

            row = Runner(store, meters.get(spec.device), region=region, progress=progress).run(spec, attempt_id)
            reply = ("done", summary(row))
        except (BrokenPipeError, EOFError):
            return  # the driver is gone; the row (if any) is already stored
        except Exception as exc:  # the runner stores failures itself; this is its own breakage
            reply = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


class WorkerMeters:
    """This worker's energy meters, one per device, each started once.

    Starting the cpu meter costs ~1 s (codecarbon's CPU detection, mostly in a subprocess), and
    ``import torch`` ~1.3 s; a cold ``joulebench run`` paid them one after the other. The cpu
    meter now starts in a thread at the worker's start, beside the imports; a run on another
    device starts its meter when it first needs it. A failed start is raised to the run that
    needs the meter (and stored as that run's failure), as before."""

    def __init__(self, region: str | None, early: str = "cpu") -> None:
        self.region = region
        self.started: dict[str, Any] = {}
        self.failed: dict[str, BaseException] = {}
        self.early = threading.Thread(target=self.start, args=(early,), name="meter-start", daemon=True)
        self.early.start()

    def start(self, device: str) -> None:
        from joulebench.harness.meters import default_meter

        try:
            self.started[device] = default_meter(device, self.region)
        except Exception as exc:
            self.failed[device] = exc

    def get(self, device: str) -> Any:
        self.early.join()
        if device not in self.started and device not in self.failed:
            self.start(device)
        if device in self.failed:
            raise self.failed.pop(device)
        return self.started[device]


def _leave() -> None:
    """Exit at once: every row is stored by now. Meters are not closed: their readings were taken
    at each run's phase edges and nothing of them is saved at close (codecarbon's tracker writes no
    file here; RAPL and NVML handles go with the process), and their ~0.4 s stop, like the
    interpreter's own teardown (torch's modules, thread pools), was on the driver's critical path."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def warm_up() -> None:
    """Pay torch's one-off costs (lazy imports of the optimizers, autograd and loader machinery)
    before the first measured run, which otherwise carried ~10x the time of later identical runs."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    data = DataLoader(TensorDataset(torch.randn(64, 8), torch.randn(64, 1)), batch_size=16, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    for opt_cls in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD):
        opt = opt_cls(model.parameters(), lr=1e-3)
        for x, y in data:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    with torch.no_grad():
        model.eval()
        model(torch.randn(4, 8))


def env_threads() -> int | None:
    """``JOULEBENCH_THREADS``: torch threads per worker, when the user fixes them."""
    value = os.environ.get("JOULEBENCH_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


class Worker:
    """One isolated worker process and the pipe to it."""

    def __init__(self, results: Path, plugins: list[str] | None = None, region: str | None = None,
                 threads: int | None = None) -> None:
        self.results = Path(results)
        self.plugins = list(plugins or [])
        self.region = region
        self.threads = threads if threads is not None else env_threads()
        self._proc: mp.process.BaseProcess | None = None
        self._conn = None
        self._atexit = False

    def start(self) -> Worker:
        """Spawn the process now (if none is alive) without waiting for it to be ready."""
        self._ensure()
        return self

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        # not daemonic, so that tasks may start DataLoader worker processes (JPEG decoding);
        # the child leaves when its pipe closes, and close() runs at exit before multiprocessing
        # joins its children
        self._proc = ctx.Process(target=_worker_main, name="joulebench-worker", daemon=False,
                                 args=(child, str(self.results), self.plugins, self.region, self.threads,
                                       os.getpid()))
        self._proc.start()
        child.close()
        self._conn = parent
        if not self._atexit:
            atexit.register(self.close)
            self._atexit = True

    def run(self, spec: ResolvedSpec,
            on_progress: Callable[[int, int | None], None] | None = None) -> dict[str, Any]:
        """Run one spec; always returns a summary, and a row is stored whatever happened."""
        self._ensure()
        started, t0 = datetime.now(UTC), time.perf_counter()  # as rows.now_utc
        attempt_id = new_attempt_id()
        self._conn.send((spec.model_dump_json(), attempt_id))
        deadline = t0 + spec.timeout_s + 30.0  # the worker's own start-up is not the run's fault
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                self.kill()
                return self._store_failure(spec, "timeout",
                                           f"run exceeded its timeout of {spec.timeout_s:.0f} s and was killed",
                                           started, t0, attempt_id)
            try:
                if self._conn.poll(min(remaining, 1.0)):
                    kind, *payload = self._conn.recv()
                    if kind == "progress":
                        if on_progress:
                            on_progress(*payload)
                        continue
                    if kind == "done":
                        return payload[0]
                    return self._store_failure(spec, "crashed", f"harness error: {payload[0]}", started, t0,
                                               attempt_id)
            except (EOFError, OSError):
                pass
            if not self._proc.is_alive():
                code = self._proc.exitcode
                self._proc = None
                return self._store_failure(spec, "crashed",
                                           f"worker process died with exit code {code} during the run",
                                           started, t0, attempt_id)

    def _store_failure(self, spec: ResolvedSpec, status: str, error: str, started, t0: float,
                       attempt_id: str) -> dict:
        from joulebench.harness.rows import failure_row
        from joulebench.harness.store import Store

        row = failure_row(spec, status, error, started, attempt_id, time.perf_counter() - t0)
        Store(self.results).write_run(row)
        return summary(row)

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._proc = None

    def stop(self) -> None:
        """Ask the process to leave, without waiting (``close`` waits); stopping several workers
        first and then closing them overlaps their exits."""
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
            except (OSError, BrokenPipeError):
                pass

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self.stop()
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
        self._proc = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        # on an error (a bad spec found while the worker was still starting) do not wait for it
        self.kill() if exc_type is not None else self.close()
