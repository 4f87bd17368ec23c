"""One array task: run entry ``index`` of a frozen run list (sbatch arrays and submitit call this).

Every rank of the task runs this module. Whatever happens after the spec is read, a row is
stored (by rank 0): a failed start of the process group is a ``crashed`` row, not a silent exit.
Rank 0 claims the run (``Store.claim``) first; a run claimed by another driver or already stored
ok is skipped (an old script submitted again, or a campaign re-run after a
partial array), and the task's output gets one line per run: key, status, metric, joules.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from joulebench.harness.distributed import agree, detect, init_distributed
from joulebench.harness.identity import new_attempt_id
from joulebench.harness.meters import default_meter
from joulebench.harness.registry import registry
from joulebench.harness.rows import failure_row, now_utc
from joulebench.harness.runner import Runner
from joulebench.harness.spec import ResolvedSpec
from joulebench.harness.store import Store
from joulebench.harness.worker import env_threads, summary


def run_entry(list_file: str, index: int, results: str) -> dict[str, Any]:
    spec = ResolvedSpec.model_validate(json.loads(Path(list_file).read_text())[int(index)])
    return run_spec(spec, results)


def task_threads() -> int:
    """Threads per rank: the CPUs SLURM gave the task (``--cpus-per-task``), else
    ``JOULEBENCH_THREADS``, else 1. Both SLURM executors come through here, so a run does the same
    work per second whichever submitted it (torch otherwise takes every core it sees)."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return int(cpus) if cpus.isdigit() and int(cpus) > 0 else (env_threads() or 1)


def claim_run(store: Store, spec: ResolvedSpec):
    """(claim, None) when this task should run ``spec``; (None, why) when another driver holds
    its claim or it is already stored ok (an old script submitted again). Rank 0 asks."""
    claim = store.claim(spec.run_key)
    if claim is None:
        return None, "claimed by another driver"
    if store.has_ok(spec.task, spec.run_key):
        claim.release()
        return None, "already stored ok"
    return claim, None


def run_spec(spec: ResolvedSpec, results: str | Path) -> dict[str, Any]:
    """Run one spec on this rank (every rank of a data-parallel run calls it; rank 0 stores)."""
    import torch

    threads = task_threads()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    store = Store(Path(results))
    if spec.world_size > 1:
        _export_submitit_env()
    started, t0 = now_utc(), time.perf_counter()
    meter = claim = None
    try:
        dist = init_distributed(spec.device)
        claim, why = claim_run(store, spec) if dist.is_main else (None, None)
        if agree(why is not None):  # before loading the plugins: a skip costs no more than that
            result = {"run_key": spec.run_key, "status": "ok", "skipped": why}
        else:
            registry()
            meter = default_meter(spec.device)
            result = summary(Runner(store, meter, dist=dist).run(spec))
    except Exception as exc:  # the runner stores method failures; this is the harness breaking
        row = failure_row(spec, "crashed", f"{type(exc).__name__}: {exc}", started, new_attempt_id(),
                          time.perf_counter() - t0)
        if detect()[0] == 0:
            store.write_run(row)
        result = summary(row)
    finally:
        if meter is not None:
            meter.close()
        if claim is not None:
            claim.release()
    if detect()[0] == 0:
        print(job_line(result), flush=True)
    return result


def job_line(result: dict[str, Any]) -> str:
    """The task's line in its SLURM output file."""
    metric, value, joules = result.get("primary_metric"), result.get("primary_value"), result.get("train_energy_j")
    parts = [f"run {result.get('run_key')}", f"skipped ({result['skipped']})" if result.get("skipped")
             else f"status {result.get('status')}",
             f"{metric or 'metric'}={value:.6g}" if value is not None else "metric n/a",
             f"train {joules:.1f} J ({result.get('energy_source')})" if joules is not None else "energy n/a"]
    if result.get("error"):
        parts.append(f"error: {result['error']}")
    return "joulebench: " + " | ".join(parts)


def _export_submitit_env() -> None:
    """submitit's multi-task jobs: export RANK/WORLD_SIZE/MASTER_* for torch.distributed; under a
    plain srun there is no submitit job and ``harness.distributed`` reads SLURM_* itself."""
    try:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    except (ImportError, RuntimeError):
        pass


if __name__ == "__main__":
    result = run_entry(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    sys.exit(0 if result["status"] == "ok" else 1)
