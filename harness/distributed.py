"""One entry to data-parallel runs, whoever launched the processes.

Understands torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), MPICH's mpiexec (``PMI_RANK``/
``PMI_SIZE``), Open MPI (``OMPI_COMM_WORLD_*``) and srun (``SLURM_PROCID``/``SLURM_NTASKS``/
``SLURM_LOCALID``). gloo on CPUs, NCCL on GPUs.

Under ``srun --mpi=pmi2`` the ranks come from PMI (``PMI_RANK``) but PMI gives no local rank;
``SLURM_LOCALID`` does, and it wins over the global rank (which would pick the wrong GPU on any
node but the first). The rendezvous port is the launcher's ``MASTER_PORT`` or, under SLURM, one
derived from the job id, so two jobs sharing a node never meet on one fixed port.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist

from joulebench.harness.context import DistInfo

LAUNCHERS = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)


def detect() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; (0, 1, 0) alone."""
    for rank_var, size_var, local_var in LAUNCHERS:
        if rank_var in os.environ and size_var in os.environ:
            rank, size = int(os.environ[rank_var]), int(os.environ[size_var])
            local = os.environ.get(local_var) or os.environ.get("SLURM_LOCALID")
            return rank, size, int(local) if local is not None else rank
    return 0, 1, 0


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group (idempotent) and describe this rank."""
    rank, size, local = detect()
    if size == 1:
        return DistInfo()
    backend = "nccl" if device == "cuda" else "gloo"
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", _master_addr())
        os.environ.setdefault("MASTER_PORT", str(master_port()))
        if device == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, rank=rank, world_size=size)
    return DistInfo(rank=rank, world_size=size, local_rank=local, backend=backend)


PORT_BASE, PORT_SPAN = 20000, 30000


def master_port(default: int = 29511) -> int:
    """A rendezvous port for this job: under SLURM derived from the job id (unique per array
    task, the same on every rank of the task), else ``default``. Launchers that choose their own
    (torchrun, submitit, the local executor) export ``MASTER_PORT`` and are never overridden."""
    job = os.environ.get("SLURM_JOB_ID", "")
    return PORT_BASE + int(job) % PORT_SPAN if job.isdigit() else default


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (a collective; alone, the flag itself)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
    dist.broadcast(value, src=0)
    return bool(value.item())


def _master_addr() -> str:
    nodes = os.environ.get("SLURM_JOB_NODELIST", "")
    if nodes and "[" not in nodes and "," not in nodes:
        return nodes  # a single-node allocation; multi-node jobs export MASTER_ADDR themselves
    return "127.0.0.1" if not nodes else socket.gethostname()


def node_count(dist_info: DistInfo | None = None) -> int:
    """Nodes the run spans: 1 for a single process, else the ranks with local rank 0 counted over
    the process group (collective: every rank calls it); without a group, SLURM's node count."""
    if dist_info is not None and dist_info.world_size == 1:
        return 1
    if dist_info is not None and dist.is_initialized():
        first = torch.tensor([1.0 if dist_info.local_rank == 0 else 0.0], dtype=torch.float64)
        dist.all_reduce(first)
        return max(1, int(first.item()))
    return int(os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES") or 1)


def sum_over_ranks(values: list[float | None], first_on_node: bool) -> list[float | None]:
    """Sum per-rank figures over the run; a rank that is not the first of its node adds nothing
    for node-level sensors (``first_on_node`` False), so nothing is counted twice."""
    if not dist.is_initialized():
        return values
    present = torch.tensor([0.0 if v is None else 1.0 for v in values], dtype=torch.float64)
    data = torch.tensor([0.0 if v is None or not first_on_node else v for v in values], dtype=torch.float64)
    dist.all_reduce(data)
    dist.all_reduce(present)
    return [float(d) if p > 0 else None for d, p in zip(data.tolist(), present.tolist())]
