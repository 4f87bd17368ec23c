"""Where and with what a run ran: versions of every package, commit, host, hardware, scheduler."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib.metadata import distributions
from pathlib import Path

from joulebench.harness import __version__


@lru_cache(maxsize=1)
def packages_json() -> str:
    """Every installed distribution and its version (recorded in each result row)."""
    pkgs = {d.metadata["Name"].lower(): d.version for d in distributions() if d.metadata["Name"]}
    return json.dumps(dict(sorted(pkgs.items())), separators=(",", ":"))


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("-dirty" if dirty else "")


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_model(device: str) -> str | None:
    if device != "cuda":
        return None
    import torch

    return torch.cuda.get_device_name(torch.cuda.current_device())


@lru_cache(maxsize=1)
def static_provenance() -> dict:
    import numpy
    import torch

    return {
        "harness_version": __version__,
        "git_commit": git_commit(),
        "packages": packages_json(),
        "python_version": sys.version.split()[0],
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def provenance(device: str) -> dict:
    return {**static_provenance(), "gpu_model": gpu_model(device), **slurm_ids()}


def slurm_ids() -> dict[str, str | None]:
    """SLURM's own job id (unique per array task) and the array's job and task ids, which name
    the task's log file (``<array job>_<task>.out``): rows of one array are told apart by them."""
    return {"slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
            "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID")}
