"""Campaigns: expansion, resume after kill -9, data-parallel runs, SLURM scripts and executors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from joulebench.cluster.campaign import (
    Campaign,
    expand,
    resolve_all,
    resolve_runs,
    resource_groups,
    resources,
)
from joulebench.cluster.slurm import freeze, sbatch_script, submitit_run
from joulebench.harness.params import SpecError
from joulebench.harness.registry import registry
from joulebench.harness.store import Store

VENV_BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}

GRID = """
name = "{name}"
[defaults]
preset = "tiny"
seeds = [0, 1]
budget = {{ steps = {steps} }}
world_sizes = {ws}
[methods.backprop]
method_params = {{ lr = 0.002 }}
[[grid]]
task = "ltsf"
methods = ["backprop"]
task_params = {{ batch_size = [16, 32] }}
"""


def write(tmp_path: Path, name: str = "c", steps: int = 5, ws: str = "[1]") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(GRID.format(name=name, steps=steps, ws=ws))
    return path


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "joulebench.harness.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def test_expansion_layers_campaign_method_and_block(tmp_path: Path) -> None:
    registry()
    specs = expand(Campaign.load(write(tmp_path)))
    assert len(specs) == 4  # 2 batch sizes × 2 seeds
    assert {s.method_params["lr"] for s in specs} == {0.002}  # the method layer applies
    assert {s.task_params["batch_size"] for s in specs} == {16, 32}
    assert len({r.run_key for r in resolve_all(specs)}) == 4


@pytest.mark.parametrize("text, message", [
    ('name = "x"\ngrid = []\nbogus = 1\n', "unknown key 'bogus'"),
    ('name = "x"\n[[grid]]\ntask = "ltsf"\n', "grid.0.methods: Field required"),
    ("name = [", "is not valid TOML"),
])
def test_bad_campaign_files_give_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message) as info:
        Campaign.load(path)
    assert "\n" not in str(info.value)


def test_killed_campaign_resumes_to_exactly_the_expected_rows(tmp_path: Path) -> None:
    campaign, results = write(tmp_path, steps=60), tmp_path / "results"
    driver = subprocess.Popen([sys.executable, "-m", "joulebench.harness.cli", "campaign", "run",
                               str(campaign), "--results", str(results)], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((results / "runs").rglob("*.parquet"))) < 1:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its worker, mid-campaign
    driver.wait()
    stored_before = len(Store(results).stored_keys())
    assert 1 <= stored_before < 4
    again = cli("campaign", "run", str(campaign), "--results", str(results))
    assert again.returncode == 0, again.stderr
    assert f"{stored_before} already stored, {4 - stored_before} to run" in again.stdout
    keys = [r[0] for r in Store(results).execute("SELECT run_key FROM runs_all").fetchall()]
    assert len(keys) == 4 and len(set(keys)) == 4
    assert "0 to run" in cli("campaign", "run", str(campaign), "--results", str(results)).stdout


@pytest.mark.parametrize("launcher", ["mpiexec", "torchrun"])
def test_two_rank_data_parallel_run_stores_one_row_in_sync(tmp_path: Path, launcher: str) -> None:
    path = tmp_path / "ddp.toml"
    path.write_text('name = "ddp"\n[defaults]\npreset = "tiny"\nworld_sizes = [2]\n'
                    'budget = { steps = 6 }\n[[grid]]\ntask = "ltsf"\nmethods = ["backprop"]\n')
    done = cli("campaign", "run", str(path), "--results", str(tmp_path / "r"), "--launcher", launcher)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = Store(tmp_path / "r").execute(
        "SELECT world_size, nodes, status, x_param_spread_over_ranks, samples, local_batch, global_batch, "
        "gradient_updates, round(device_hours * 3600 / wall_s, 6) FROM runs").fetchall()
    assert rows == [(2, 1, "ok", 0.0, 6 * 32 * 2, 32, 64, 6, 2.0)]  # device-hours = 2 ranks × wall


def test_sbatch_script_holds_array_resources_and_srun(tmp_path: Path) -> None:
    registry()
    path = write(tmp_path, ws="[1, 2]")
    text = path.read_text().replace("[defaults]", "[defaults]\ncpus_per_task = 4\ngpus_per_node = 1\n"
                                    "mem_gb = 16\ntime_min = 90\npartition = \"gpu\"")
    path.write_text(text)
    campaign = Campaign.load(path)
    specs = resolve_all(expand(campaign))
    lists = freeze(specs, tmp_path / "results", campaign.name)
    assert set(lists) == {1, 2}
    script = sbatch_script(lists[2], 4, 2, tmp_path / "results", resources(campaign), 3, campaign.name)
    for line in ("#SBATCH --array=0-3%3", "#SBATCH --ntasks-per-node=2", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --mem=16G", "#SBATCH --time=90",
                 "#SBATCH --partition=gpu"):
        assert line in script
    assert f"srun {sys.executable} -m joulebench.cluster.array {lists[2]} \"$SLURM_ARRAY_TASK_ID\"" in script
    assert len(json.loads(lists[2].read_text())) == 4


@pytest.mark.parametrize("cluster", ["debug", "local"])
def test_submitit_executors_run_the_array(tmp_path: Path, cluster: str) -> None:
    registry()
    specs = resolve_all(expand(Campaign.load(write(tmp_path))))[:2]
    outcomes = submitit_run(specs, tmp_path / "results", {"time_min": 5}, 2, "t", cluster)
    assert [o["status"] for o in outcomes] == ["ok", "ok"]
    assert Store(tmp_path / "results").stored_keys() == {s.run_key for s in specs}


def test_resources_are_layered_and_split_the_arrays(tmp_path: Path) -> None:
    registry()
    path = write(tmp_path, ws="[1, 2]")
    path.write_text(path.read_text().replace("[defaults]", '[defaults]\ncpus_per_task = 2\ntime_min = 30\n'
                                             'setup = ["module load mpi/openmpi"]')
                    .replace("[methods.backprop]", "[methods.backprop]\ntime_min = 45")
                    + '[[grid]]\ntask = "ltsf"\nmethods = ["backprop"]\nseeds = [7]\nworld_sizes = [1]\n'
                      'gpus_per_node = 1\n')
    groups = resource_groups(resolve_runs(Campaign.load(path)))
    assert [(res, len(specs)) for res, specs in groups] == [
        ({"cpus_per_task": 2, "time_min": 45, "setup": ["module load mpi/openmpi"]}, 8),
        ({"cpus_per_task": 2, "time_min": 45, "setup": ["module load mpi/openmpi"], "gpus_per_node": 1}, 1)]
    out = tmp_path / "scripts"
    done = cli("campaign", "run", str(path), "--executor", "sbatch", "--results", str(tmp_path / "r"),
               "--out", str(out))
    assert done.returncode == 0, done.stderr
    scripts = sorted(p.name for p in out.iterdir())
    assert scripts == ["c-r0-ws1.sbatch", "c-r0-ws2.sbatch", "c-r1-ws1.sbatch"]
    text = (out / "c-r1-ws1.sbatch").read_text()
    assert "#SBATCH --array=0-0%32" in text and "#SBATCH --gpus-per-node=1" in text
    assert text.index("module load mpi/openmpi") < text.index("\nsrun ")
    assert "--gpus-per-node" not in (out / "c-r0-ws2.sbatch").read_text()
    assert not (tmp_path / "r" / "runs").exists()  # sbatch writes scripts, runs nothing here


def test_plan_lists_stored_and_missing(tmp_path: Path) -> None:
    done = cli("campaign", "plan", str(write(tmp_path)), "--results", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("missing ") == 4
    assert "campaign c: 4 runs, 0 stored, 4 to run" in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[defaults]\nseed = 3\n[[grid]]\ntask = "ltsf"\nmethods = ["backprop"]\n')
    failed = cli("campaign", "plan", str(bad))
    assert failed.returncode != 0
    assert len(failed.stderr.strip().splitlines()) == 1 and "seed" in failed.stderr


def test_report_aggregates_seeds_per_cell(tmp_path: Path) -> None:
    import pandas as pd

    from joulebench.cluster.campaign import Campaign, resolve_runs
    from joulebench.cluster.report import cell_labels, markdown_table

    specs = [s for s, _ in resolve_runs(Campaign.load(write(tmp_path)))]

    def row(s) -> dict:
        bad = s.task_params["batch_size"] == 32 and s.seed == 1
        return {"run_key": s.run_key, "cell_key": s.cell_key, "task": s.task, "preset": s.preset,
                "seed": s.seed, "budget_steps": s.budget.steps, "hardware_class": s.hardware_class,
                "method": s.method, "world_size": 1, "status": "diverged" if bad else "ok",
                "error": "loss is NaN" if bad else None, "primary_metric": "mse",
                "primary_value": s.task_params["batch_size"] / 100 + s.seed, "n_trainable_params": 100,
                "train_energy_j": 10.0, "energy_estimated": True, "train_s": 1.0, "samples": 64,
                "gradient_updates": 2}

    lines = markdown_table(pd.DataFrame([row(s) for s in specs]), cell_labels(specs)).splitlines()
    assert "test mse" in lines[0] and "train J (estimate)" in lines[0]
    cells = {line.split(" | ")[2]: line.split(" | ") for line in lines[2:4]}
    assert cells["backprop (batch_size=16)"][6:8] == ["2/2", "0.6600 [0.1600–1.1600]"]
    assert cells["backprop (batch_size=32)"][6:8] == ["1/2", "0.3200"]
    assert cells["backprop (batch_size=16)"][5].startswith("cpu:")
    assert lines[-1].endswith("seed=1: diverged: loss is NaN")


def test_report_never_shares_a_median_between_estimated_and_measured_energy(tmp_path: Path) -> None:
    """One cell, two seeds estimated (codecarbon) and one measured (RAPL through perun): two lines,
    each its own median, and a column that says which is which."""
    import pandas as pd

    from joulebench.cluster.report import markdown_table

    def row(seed: int, joules: float, estimated: bool) -> dict:
        return {"run_key": f"k{seed}", "cell_key": "c", "task": "ltsf", "preset": "tiny", "seed": seed,
                "budget_steps": 10, "hardware_class": "cpu:test", "method": "backprop", "world_size": 1,
                "status": "ok", "error": None, "primary_metric": "mse", "primary_value": 0.5,
                "n_trainable_params": 100, "train_energy_j": joules, "energy_estimated": estimated,
                "train_s": 1.0, "samples": 64, "gradient_updates": 2}

    rows = pd.DataFrame([row(0, 10.0, True), row(1, 20.0, True), row(2, 500.0, False)])
    lines = markdown_table(rows, {f"k{i}": "backprop" for i in range(3)}).splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert "train J" in head and "energy" in head
    body = [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    got = sorted((b["energy"], b["ok/runs"], b["train J"]) for b in body)
    assert got == [("estimate", "2/2", "15 [10–20]"), ("measured", "1/1", "500")]
    # one kind only: the header says it, no extra column
    one = markdown_table(rows.iloc[:2], {"k0": "backprop", "k1": "backprop"}).splitlines()
    assert "train J (estimate)" in one[0] and "| energy |" not in one[0] and len(one) == 3


def test_repeats_are_interleaved_so_machine_drift_spreads_over_cells(tmp_path: Path) -> None:
    """Every cell's seed i runs before any cell's seed i+1 (interleaved repeats): a machine
    that slows for a minute then touches one repeat of many cells, not all repeats of one cell, so cross-cell time ratios (the forecast's factors) are not biased by it."""
    registry()
    specs = expand(Campaign.load(write(tmp_path)))
    assert [s.seed for s in specs] == [0, 0, 1, 1]
    assert [s.task_params["batch_size"] for s in specs] == [16, 32, 16, 32]
    cell_major = write(tmp_path, name="cells")
    cell_major.write_text('order = "cell"\n' + cell_major.read_text())
    assert [s.seed for s in expand(Campaign.load(cell_major))] == [0, 1, 0, 1]
    cell_major.write_text(cell_major.read_text().replace('"cell"', '"random"'))
    with pytest.raises(SpecError, match="order") as info:
        Campaign.load(cell_major)
    assert "\n" not in str(info.value)
