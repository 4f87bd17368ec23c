"""SLURM pieces that need no cluster: rank detection under srun, the port per job, the array
task's failed start, its thread count, the sbatch script's log folder and launch prefix, and the
ids that tie a row to its log file. The same paths run against real daemons in test_slurm.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from joulebench.cluster.array import job_line, task_threads
from joulebench.cluster.slurm import sbatch_script
from joulebench.harness.distributed import LAUNCHERS, detect, master_port
from joulebench.harness.provenance import slurm_ids
from joulebench.harness.registry import registry
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_CPUS_PER_TASK",
              "MASTER_PORT", "MASTER_ADDR", "JOULEBENCH_THREADS")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in [v for triple in LAUNCHERS for v in triple] + list(SLURM_VARS):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_srun_with_pmi2_takes_the_local_rank_from_slurm(clean_env: pytest.MonkeyPatch) -> None:
    # srun --mpi=pmi2 on the second node of a 2 × 2 job: PMI gives the rank, not the local rank
    for key, value in {"PMI_RANK": "3", "PMI_SIZE": "4", "SLURM_PROCID": "3", "SLURM_NTASKS": "4",
                       "SLURM_LOCALID": "1"}.items():
        clean_env.setenv(key, value)
    assert detect() == (3, 4, 1)


def test_rendezvous_port_differs_per_job_and_yields_to_the_launcher(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SLURM_JOB_ID", "41")
    first = master_port()
    clean_env.setenv("SLURM_JOB_ID", "42")
    assert master_port() != first and 1024 < first < 65536
    clean_env.delenv("SLURM_JOB_ID")
    assert master_port(29511) == 29511  # no scheduler: the documented default


def test_threads_follow_the_cpus_slurm_gave_the_task(clean_env: pytest.MonkeyPatch) -> None:
    assert task_threads() == 1
    clean_env.setenv("JOULEBENCH_THREADS", "2")
    assert task_threads() == 2
    clean_env.setenv("SLURM_CPUS_PER_TASK", "3")
    assert task_threads() == 3


def test_rows_name_the_array_task_not_only_the_array(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in {"SLURM_JOB_ID": "8", "SLURM_ARRAY_JOB_ID": "6", "SLURM_ARRAY_TASK_ID": "1"}.items():
        clean_env.setenv(key, value)
    assert slurm_ids() == {"slurm_job_id": "8", "slurm_array_job_id": "6", "slurm_array_task_id": "1"}


def test_sbatch_script_logs_where_asked_and_wraps_srun(tmp_path: Path) -> None:
    script = sbatch_script(tmp_path / "runs.json", 2, 2, tmp_path / "r",
                           {"launch_prefix": "perun monitor --format json -b"}, 4, "c",
                           python="/venv/bin/python", log_dir=tmp_path / "logs")
    assert f"#SBATCH --output={tmp_path}/logs/%A_%a.out" in script
    last = script.strip().splitlines()[-1]
    assert last.startswith("perun monitor --format json -b srun /venv/bin/python -m joulebench.cluster.array ")


def test_job_line_names_key_status_metric_and_joules() -> None:
    line = job_line({"run_key": "abc", "status": "ok", "primary_metric": "mse", "primary_value": 0.5,
                     "train_energy_j": 2.25, "energy_source": "estimate:codecarbon"})
    assert line == "joulebench: run abc | status ok | mse=0.5 | train 2.2 J (estimate:codecarbon)"


@pytest.mark.slow
def test_array_task_whose_process_group_cannot_start_stores_a_crashed_row(tmp_path: Path) -> None:
    registry()
    spec = resolve(RunSpec.parse({"task": "ltsf", "method": "backprop", "preset": "tiny", "world_size": 2,
                                  "budget": {"steps": 2}}))
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps([spec.model_dump(mode="json")]))
    with socket.socket() as taken:  # another job already listens on the rendezvous port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**{k: v for k, v in os.environ.items() if k not in SLURM_VARS}, "RANK": "0", "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(taken.getsockname()[1]), "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-m", "joulebench.cluster.array", str(runs), "0",
                               str(tmp_path / "r")], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 1, done.stderr[-2000:]
    rows = Store(tmp_path / "r").execute("SELECT run_key, status, error FROM runs").fetchall()
    assert len(rows) == 1 and rows[0][:2] == (spec.run_key, "crashed")
    assert "address already in use" in rows[0][2].lower() or "EADDRINUSE" in rows[0][2]
    assert f"joulebench: run {spec.run_key} | status crashed" in done.stdout


def test_launch_prefix_with_submitit_is_a_one_line_error(tmp_path: Path) -> None:
    from joulebench.cluster.slurm import submit
    from joulebench.harness.params import SpecError

    registry()
    spec = resolve(RunSpec.parse({"task": "ltsf", "method": "backprop", "preset": "tiny"}))
    with pytest.raises(SpecError, match="launch_prefix wraps the srun line of sbatch scripts") as info:
        submit([spec], tmp_path, {"launch_prefix": "perun monitor -b"}, 1, "c", cluster="debug")
    assert "\n" not in str(info.value)
