"""One array task: run entry ``index`` of a frozen run list (sbatch arrays and submitit call this)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from joulebench.harness.distributed import init_distributed
from joulebench.harness.meters import default_meter
from joulebench.harness.registry import registry
from joulebench.harness.runner import Runner, failure_row, new_attempt_id, now_utc
from joulebench.harness.spec import ResolvedSpec
from joulebench.harness.store import Store
from joulebench.harness.worker import summary


def run_entry(list_file: str, index: int, results: str) -> dict[str, Any]:
    spec = ResolvedSpec.model_validate(json.loads(Path(list_file).read_text())[int(index)])
    return run_spec(spec, results)


def run_spec(spec: ResolvedSpec, results: str | Path) -> dict[str, Any]:
    """Run one spec on this rank (every rank of a data-parallel run calls it; rank 0 stores)."""
    store = Store(Path(results))
    if spec.world_size > 1:
        try:  # submitit's multi-task jobs: export RANK/WORLD_SIZE/MASTER_* for torch.distributed
            from submitit.helpers import TorchDistributedEnvironment

            TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        except (ImportError, RuntimeError):
            pass  # plain srun: harness.distributed reads SLURM_* itself
    registry()
    started, t0 = now_utc(), time.perf_counter()
    dist = init_distributed(spec.device)
    meter = default_meter(spec.device)
    try:
        row = Runner(store, meter, dist=dist).run(spec)
    except Exception as exc:  # the runner stores method failures; this is the harness breaking
        row = failure_row(spec, "crashed", f"{type(exc).__name__}: {exc}", started, new_attempt_id(),
                          time.perf_counter() - t0)
        if dist.is_main:
            store.write_run(row)
    finally:
        meter.close()
    return summary(row)


if __name__ == "__main__":
    result = run_entry(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    sys.exit(0 if result["status"] == "ok" else 1)
