"""init_distributed's launcher detection, and energy summed over ranks without double counting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from joulebench.harness.context import DistInfo
from joulebench.harness.distributed import LAUNCHERS, detect, init_distributed, node_count

ALL_VARS = [v for triple in LAUNCHERS for v in triple] + ["SLURM_JOB_NUM_NODES", "SLURM_NNODES"]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ALL_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("env, expected", [
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (3, 4, 1)),                     # torchrun
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1"}, (1, 2, 1)),              # MPICH
    ({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8",
      "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, (5, 8, 1)),                                     # Open MPI
    ({"SLURM_PROCID": "6", "SLURM_NTASKS": "8", "SLURM_LOCALID": "2"}, (6, 8, 2)),        # srun
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "RANK": "1", "WORLD_SIZE": "2"}, (1, 2, 1)),  # torchrun wins
    ({}, (0, 1, 0)),
])
def test_detect_reads_each_launcher(clean_env: pytest.MonkeyPatch, env: dict, expected: tuple) -> None:
    for key, value in env.items():
        clean_env.setenv(key, value)
    assert detect() == expected


def test_single_process_needs_no_group(clean_env: pytest.MonkeyPatch) -> None:
    assert init_distributed("cpu") == DistInfo()
    assert not dist.is_initialized()
    assert node_count(DistInfo()) == 1
    clean_env.setenv("SLURM_JOB_NUM_NODES", "3")
    assert node_count(None) == 3  # no group: SLURM's figure


def _ranks(rank: int, init_file: str, out_dir: str) -> None:
    from joulebench.harness.phases import PhaseClock
    from joulebench.harness.runner import sum_energy_over_ranks

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    results = {}
    # (case, local rank of rank 1, cpu source): rank 0 measured 10 J, rank 1 measured 7 J
    for case, local_rank_1, source in (("one_node_rapl", 1, "rapl"),
                                       ("one_node_estimate", 1, "estimate:codecarbon"),
                                       ("one_node_ram_model", 1, "estimate:codecarbon/ram-power-model"),
                                       ("two_nodes_rapl", 0, "rapl")):
        clock = PhaseClock(None)
        clock.joules["train"]["cpu"] = 10.0 if rank == 0 else 7.0
        clock.sources["cpu"] = source
        info = DistInfo(rank=rank, world_size=2, local_rank=0 if rank == 0 else local_rank_1, backend="gloo")
        sum_energy_over_ranks(clock, info)
        results[case] = [clock.joules["train"]["cpu"], clock.joules["train"]["gpu"], node_count(info)]
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def test_energy_is_summed_over_nodes_never_twice(tmp_path: Path) -> None:
    mp.start_processes(_ranks, args=(str(tmp_path / "pg"), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank ends with the run's figure
    assert ranks[0]["one_node_rapl"] == [10.0, None, 1]       # a node sensor: its first rank only
    assert ranks[0]["one_node_estimate"] == [17.0, None, 1]   # per-process estimates add up
    assert ranks[0]["one_node_ram_model"] == [10.0, None, 1]  # the RAM model describes the node
    assert ranks[0]["two_nodes_rapl"] == [17.0, None, 2]      # one sensor reading per node, summed
