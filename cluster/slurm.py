"""SLURM: job arrays through submitit, or a plain sbatch array script (no dependency at all).

Both freeze the list of missing runs into ``<results>/campaigns/<name>-<stamp>-ws<N>.json`` at
submission, so array index i always means the same run, and group runs by world size (one array
per size: an array task has one shape). Each array task starts ``world_size`` tasks with srun;
every rank runs ``joulebench.cluster.array`` (entry i of the list; ``joulebench.cluster.launch``
does the same for one spec file) and rank 0 stores the row. A failed array task does not stop
the others; its row says why, and re-submitting the campaign runs only what is missing.

MPI on clusters: the script needs no MPI wheel. srun starts the ranks and sets ``SLURM_PROCID``/
``SLURM_NTASKS``/``SLURM_LOCALID``, which ``init_distributed`` reads; torch.distributed then uses
NCCL (GPUs) or gloo (CPUs), not MPI. Methods that use mpi4py (Propulate, AB-training) must load
the site's MPI (e.g. ``module load mpi/openmpi``) and an mpi4py built or configured for it
(``MPI4PY_MPIABI``); never the ``mpich`` wheel beside a site Open MPI. Such lines go in
``setup = ["module load …"]`` of the campaign's ``[defaults]``: they run before ``srun`` in the
sbatch script and through submitit's ``slurm_setup``.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joulebench.harness.params import SpecError
from joulebench.harness.spec import ResolvedSpec


def freeze(specs: list[ResolvedSpec], results: Path, name: str) -> dict[int, Path]:
    """Write the run lists, one per world size; returns world size → list file."""
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"  # a later freeze never overwrites
    out: dict[int, Path] = {}
    for ws in sorted({s.world_size for s in specs}):
        path = results / "campaigns" / f"{name}-{stamp}-ws{ws}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([s.model_dump(mode="json") for s in specs if s.world_size == ws]))
        out[ws] = path
    return out


def sbatch_script(list_file: Path, n: int, world_size: int, results: Path, resources: dict[str, Any],
                  max_parallel: int, name: str, python: str = sys.executable,
                  log_dir: Path | None = None) -> str:
    """An sbatch array script; the site's MPI/srun starts the ranks (no MPI wheel needed there).

    Logs go to ``log_dir`` (default ``<results>/slurm``) as ``<array job>_<task>.out``; slurmd
    opens that file before the script runs, so the caller creates the folder. The campaign's
    ``launch_prefix`` (e.g. ``perun monitor --format json -b``) wraps the task's ``srun`` line:
    one wrapper per array task, on the task's single node."""
    log_dir = Path(log_dir or results / "slurm")
    lines = ["#!/bin/bash", f"#SBATCH --job-name=jb-{name}", f"#SBATCH --array=0-{n - 1}%{max_parallel}",
             "#SBATCH --nodes=1", f"#SBATCH --ntasks-per-node={world_size}",
             f"#SBATCH --cpus-per-task={resources.get('cpus_per_task', 1)}",
             f"#SBATCH --output={log_dir}/%A_%a.out"]
    if resources.get("gpus_per_node"):
        lines.append(f"#SBATCH --gpus-per-node={resources['gpus_per_node']}")
    if resources.get("mem_gb"):
        lines.append(f"#SBATCH --mem={int(resources['mem_gb'])}G")
    if resources.get("time_min"):
        lines.append(f"#SBATCH --time={int(resources['time_min'])}")
    if resources.get("partition"):
        lines.append(f"#SBATCH --partition={resources['partition']}")
    prefix = f"{resources['launch_prefix']} " if resources.get("launch_prefix") else ""
    lines += ["", *resources.get("setup", []), "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
              f"{prefix}srun {shlex.quote(python)} -m joulebench.cluster.array {shlex.quote(str(list_file))} "
              f"\"$SLURM_ARRAY_TASK_ID\" {shlex.quote(str(results))}", ""]
    return "\n".join(lines)


@dataclass
class Submitted:
    """One submitted array: its jobs and the frozen entries they run, in index order."""

    jobs: list[Any]
    entries: list[dict[str, Any]]


def submit(specs: list[ResolvedSpec], results: Path, resources: dict[str, Any], max_parallel: int,
           name: str, cluster: str | None = None) -> list[Submitted]:
    """Submit one array per world size with submitit (``cluster``: None = SLURM, "local", "debug");
    returns at once, so that every array of a campaign is queued before any is waited on."""
    import submitit

    from joulebench.cluster.array import run_entry

    if resources.get("launch_prefix"):
        raise SpecError("launch_prefix wraps the srun line of sbatch scripts; submitit starts the "
                        "ranks itself: use `campaign sbatch` (or --executor sbatch) for it")
    out = []
    for ws, list_file in freeze(specs, results, name).items():
        entries = json.loads(list_file.read_text())
        executor = submitit.AutoExecutor(folder=str(results / "submitit" / "%j"), cluster=cluster)
        executor.update_parameters(**submitit_parameters(resources, ws, max_parallel, name, cluster))
        jobs = executor.map_array(run_entry, [str(list_file)] * len(entries), list(range(len(entries))),
                                  [str(results)] * len(entries))
        out.append(Submitted(jobs, entries))
    return out


def submitit_parameters(resources: dict[str, Any], world_size: int, max_parallel: int, name: str,
                        cluster: str | None) -> dict[str, Any]:
    """The campaign's resources in submitit's words (``cpus_per_task`` becomes the task's
    SLURM_CPUS_PER_TASK, which sets each rank's thread count as in the sbatch script)."""
    params = {"timeout_min": int(resources.get("time_min", 60)), "tasks_per_node": world_size,
              "cpus_per_task": int(resources.get("cpus_per_task", 1)), "nodes": 1,
              "slurm_array_parallelism": max_parallel, "name": f"jb-{name}"}
    if resources.get("gpus_per_node"):
        params["gpus_per_node"] = int(resources["gpus_per_node"])
    if resources.get("mem_gb"):
        params["mem_gb"] = resources["mem_gb"]
    if resources.get("partition"):
        params["slurm_partition"] = resources["partition"]
    if resources.get("setup") and cluster is None:  # shell lines before srun (site MPI modules)
        params["slurm_setup"] = list(resources["setup"])
    return params


def collect(submitted: list[Submitted]) -> list[dict[str, Any]]:
    """Wait for every job; one outcome per run. A multi-task job returns one result per rank
    (``results()``); rank 0's is the run's. A failed or cancelled task does not stop the others."""
    outcomes = []
    for batch in submitted:
        for job, entry in zip(batch.jobs, batch.entries):
            try:
                outcomes.append(job.results()[0])
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                outcomes.append({"run_key": entry.get("run_key"), "status": "crashed",
                                 "error": f"SLURM job {job.job_id}: {type(exc).__name__}: {first}"})
    return outcomes


def submitit_run(specs: list[ResolvedSpec], results: Path, resources: dict[str, Any], max_parallel: int,
                 name: str, cluster: str | None = None) -> list[dict[str, Any]]:
    """Submit and wait (one resource set); ``campaign run`` submits every set before waiting."""
    return collect(submit(specs, results, resources, max_parallel, name, cluster))
