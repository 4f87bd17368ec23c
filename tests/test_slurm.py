"""Campaigns on a real single-node SLURM (scripts/slurm-local.sh: Debian's slurm-wlm, munge,
slurmdbd with mariadb for accounting), through submitit and through generated sbatch scripts.

Skips with the reason where the cluster cannot be had (not root, no apt-get); CI starts it in
scripts/test.sh, and a developer's run starts (and afterwards stops) it here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from joulebench.harness.store import Store

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"
SLURM_DIR = Path(os.environ.get("JOULEBENCH_SLURM_DIR", "/tmp/joulebench-slurm"))
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slurm

CAMPAIGN = """
name = "{name}"
max_parallel = 8
[defaults]
preset = "tiny"
seeds = [0, 1]
world_sizes = [1, 2]
budget = {{ steps = 3 }}
time_min = 10
{extra}
[[grid]]
task = "ltsf"
methods = ["backprop"]
"""


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """The environment of a user of the local cluster (SLURM_CONF, the venv on PATH)."""
    if os.geteuid() != 0:
        pytest.skip("a local SLURM needs root (slurmd and munged run as root); not root here")
    if not shutil.which("apt-get") and not Path("/usr/sbin/slurmctld").exists():
        pytest.skip("no apt-get to install Debian's slurm-wlm and no SLURM installed")
    env = {**os.environ, "SLURM_CONF": str(SLURM_DIR / "slurm.conf"), "OMP_NUM_THREADS": "1",
           "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    started_here = False
    if subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, env=env).returncode != 0:
        t0 = time.perf_counter()
        start = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, env=env,
                               timeout=900)
        if start.returncode == 3:
            pytest.skip(f"no local SLURM: {start.stderr.strip().splitlines()[-1]}")
        assert start.returncode == 0, start.stderr
        started_here = True
        print(f"local SLURM set up in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    yield env
    if started_here:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, env=env, timeout=120)


def cli(env: dict, *args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "joulebench.harness.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def campaign(tmp_path: Path, name: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(CAMPAIGN.format(name=name, extra=extra))
    return path


def squeue(env: dict, *args: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", *args], capture_output=True, text=True,
                         env=env, timeout=30).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


LIVE_STATES = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED"}


def accounted(env: dict, job_ids: list[str]) -> dict[str, str]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, env=env, timeout=30).stdout
    return dict(line.split("|")[:2] for line in out.splitlines() if line.strip())


def wait_for_jobs(env: dict, job_ids: list[str], timeout: float = 400, expect: int = 0) -> dict[str, str]:
    """Block until none of the jobs is queued or running and accounting has every task's final
    state; returns array task → final state. squeue drops a task before slurmdbd records its end
    (a full run on 2026-12-02 saw '7_1: RUNNING' in sacct after squeue was empty); with ``expect``,
    also until that many tasks are in accounting at all (CI once saw 3 of 4 listed)."""
    deadline = time.time() + timeout
    while squeue(env, "-j", ",".join(job_ids)):
        assert time.time() < deadline, f"jobs {job_ids} still queued after {timeout} s"
        time.sleep(1)
    while True:
        states = accounted(env, job_ids)
        settled = len(states) >= expect and not any(s.split()[0] in LIVE_STATES for s in states.values())
        if settled or time.time() > deadline:
            return states
        time.sleep(1)


def tasks_of(env: dict, job: str) -> list[tuple[str, str]]:
    """(start, end) of each task of an array, from accounting."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,Start,End", "-j", job], capture_output=True,
                         text=True, env=env, timeout=30).stdout
    return [(start, end) for _, start, end in (line.split("|") for line in out.splitlines() if "_" in line)]


def arrays_of(env: dict, name: str, since: str) -> dict[int, tuple[str, str]]:
    """Array job id → (first task start, last task end) of the arrays named ``name`` submitted
    since ``since`` (ISO stamps of one clock, so they compare as strings)."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,Start,End", "--name", name, "-S", since],
                         capture_output=True, text=True, env=env, timeout=30).stdout
    spans: dict[int, list[tuple[str, str]]] = {}
    for job, start, end in (line.split("|") for line in out.splitlines() if "_" in line):
        if start[:1].isdigit() and end[:1].isdigit():
            spans.setdefault(int(job.split("_")[0]), []).append((start, end))
    return {j: (min(s for s, _ in v), max(e for _, e in v)) for j, v in spans.items()}


def rows(results: Path) -> list[dict]:
    names = ("run_key", "status", "world_size", "slurm_job_id", "slurm_array_job_id", "slurm_array_task_id",
             "started_at", "finished_at")
    found = Store(results).execute(f"SELECT {', '.join(names)} FROM runs ORDER BY run_key").fetchall()
    return [dict(zip(names, r)) for r in found]


@pytest.mark.slow
def test_submitit_campaign_survives_a_cancelled_task_and_reruns_only_it(slurm_env: dict, tmp_path: Path) -> None:
    path, results = campaign(tmp_path, "sub"), tmp_path / "r"
    t0, since = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S")
    driver = subprocess.Popen([sys.executable, "-m", "joulebench.harness.cli", "campaign", "run", str(path),
                               "--executor", "slurm", "--results", str(results)], env=slurm_env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, victim = time.time() + 300, None
    while victim is None and time.time() < deadline:  # task 1 of the first (world size 1) array
        tasks = {i: s for i, s in squeue(slurm_env, "-n", "jb-sub")}
        arrays = sorted({int(i.split("_")[0]) for i in tasks if "_" in i})
        if arrays and tasks.get(f"{arrays[0]}_1") == "RUNNING":
            victim = f"{arrays[0]}_1"
        time.sleep(0.3)
    assert victim, "the array task to cancel never ran"
    subprocess.run(["scancel", victim], env=slurm_env, check=True, timeout=30)
    out, err = driver.communicate(timeout=600)
    first_s = time.perf_counter() - t0
    assert driver.returncode == 1, out + err
    crashed = [line for line in out.splitlines() if line.startswith("[crashed]")]
    assert len(crashed) == 1 and f"SLURM job {victim}" in crashed[0], out
    assert "AssertionError" not in out and "3 ok, 1 not ok" in out
    before = {r["run_key"]: r for r in rows(results)}
    assert sorted(r["status"] for r in before.values()) == ["ok", "ok", "ok"]
    assert crashed[0].split(" key ")[1].split(" |")[0] not in before  # the line names the run's key
    ws1, ws2 = sorted(arrays_of(slurm_env, "jb-sub", since).items())  # job id → (first start, last end)
    assert ws2[1][0] < ws1[1][1], \
        "the 2-rank array waited for the 1-rank array: arrays must all be queued before any is awaited"

    t1 = time.perf_counter()
    again = cli(slurm_env, "campaign", "run", str(path), "--executor", "slurm", "--results", str(results))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 already stored, 1 to run" in again.stdout and "1 ok, 0 not ok" in again.stdout
    after = rows(results)
    assert [r["status"] for r in after] == ["ok"] * 4
    for r in after:  # the three runs stored earlier were not run again
        if r["run_key"] in before:
            assert r["started_at"] == before[r["run_key"]]["started_at"]
    # every row names its own array task, so it can be matched to the task's log
    # (submitit submits a one-run array as a plain job: no array ids, its own job id names the log)
    assert len({(r["slurm_array_job_id"], r["slurm_array_task_id"]) for r in after if r["slurm_array_job_id"]}) == 3
    assert len({r["slurm_job_id"] for r in after}) == 4
    for r in after:
        job = (f"{r['slurm_array_job_id']}_{r['slurm_array_task_id']}" if r["slurm_array_job_id"]
               else r["slurm_job_id"])
        text = (results / "submitit" / job / f"{job}_0_log.out").read_text()
        assert f"joulebench: run {r['run_key']} | status ok" in text
    assert "0 to run" in cli(slurm_env, "campaign", "run", str(path), "--executor", "slurm",
                             "--results", str(results)).stdout
    print(f"submitit campaign: {first_s:.1f} s with the cancel, {time.perf_counter() - t1:.1f} s to re-run it",
          file=sys.stderr)


@pytest.mark.slow
def test_sbatch_scripts_run_the_campaign_and_a_stale_resubmission_runs_nothing(slurm_env: dict,
                                                                                tmp_path: Path) -> None:
    path, results = campaign(tmp_path, "sb"), tmp_path / "r"
    written = cli(slurm_env, "campaign", "sbatch", str(path), "--results", "r", "--out", "scripts", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    scripts = [tmp_path / "scripts" / "sb-ws2.sbatch", tmp_path / "scripts" / "sb-ws1.sbatch"]

    def submit() -> list[str]:  # the 2-rank array first, so that its two tasks share the node
        return [subprocess.run(["sbatch", "--parsable", str(s)], capture_output=True, text=True, env=slurm_env,
                               cwd=tmp_path, check=True).stdout.strip() for s in scripts]

    t0 = time.perf_counter()
    jobs = submit()
    states = wait_for_jobs(slurm_env, jobs)
    campaign_s = time.perf_counter() - t0
    assert sorted(states.values()) == ["COMPLETED"] * 4, states
    stored = rows(results)
    assert [r["status"] for r in stored] == ["ok"] * 4
    pair = tasks_of(slurm_env, jobs[0])
    assert len(pair) == 2 and max(s for s, _ in pair) < min(e for _, e in pair), \
        "the two 2-rank tasks did not run at the same time on the node"
    for r in stored:  # --out DIR holds the logs; one line per run names key, status, metric, J
        log = tmp_path / "scripts" / f"{r['slurm_array_job_id']}_{r['slurm_array_task_id']}.out"
        lines = [line for line in log.read_text().splitlines() if line.startswith("joulebench: ")]
        assert len(lines) == 1 and lines[0].startswith(f"joulebench: run {r['run_key']} | status ok | mse=")
        assert " J (estimate" in lines[0]

    stale = submit()  # the same, now stale, scripts again: every task finds its run stored
    assert sorted(wait_for_jobs(slurm_env, stale, expect=4).values()) == ["COMPLETED"] * 4
    assert rows(results) == stored
    assert Store(results).execute("SELECT count(*) FROM runs_all").fetchall() == [(4,)]
    for job in stale:
        for log in (tmp_path / "scripts").glob(f"{job}_*.out"):
            assert "skipped (already stored ok)" in log.read_text()
    print(f"sbatch campaign: {campaign_s:.1f} s", file=sys.stderr)


def sbatch_campaign(env: dict, tmp_path: Path, path: Path) -> dict[str, str]:
    """Write a campaign's sbatch scripts, submit them all, wait; returns task → final state."""
    written = cli(env, "campaign", "sbatch", str(path), "--results", "r", "--out", "scripts", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    jobs = [subprocess.run(["sbatch", "--parsable", str(s)], capture_output=True, text=True, env=env,
                           cwd=tmp_path, check=True).stdout.strip()
            for s in sorted((tmp_path / "scripts").glob("*.sbatch"))]
    return wait_for_jobs(env, jobs)


@pytest.mark.slow
@pytest.mark.perun
def test_launch_prefix_wraps_each_array_task_in_perun_and_its_report_is_imported(slurm_env: dict,
                                                                                 tmp_path: Path) -> None:
    if not (VENV_BIN / "perun").exists():
        pytest.skip("perun is not installed (pip install -e '.[perun]')")
    prefix = 'launch_prefix = "perun -l ERROR monitor --format json ' \
             '--data-out perun/${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} -b"'
    path = campaign(tmp_path, "pp", prefix).read_text().replace("seeds = [0, 1]", "seeds = [0]")
    (tmp_path / "pp.toml").write_text(path.replace("world_sizes = [1, 2]", "world_sizes = [2]"))
    states = sbatch_campaign(slurm_env, tmp_path, tmp_path / "pp.toml")
    assert list(states.values()) == ["COMPLETED"], states
    (report,) = (tmp_path / "perun").glob("*/srun.json")
    done = cli(slurm_env, "perun-import", str(report), "--results", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    (row,) = Store(tmp_path / "r").execute(
        "SELECT run_key, x_perun_run_id, x_perun_seconds, epoch(finished_at - started_at) FROM runs").fetchall()
    assert row[1].startswith(f"{os.uname().nodename.split('.')[0]}@") and row[2] == pytest.approx(row[3], abs=1e-3)
    assert f"  {row[0]}: " in done.stdout and "idle/overhead (no run)" in done.stdout


@pytest.mark.slow
def test_propulate_search_as_a_two_rank_slurm_job_stores_a_parent_and_its_trials(slurm_env: dict,
                                                                                tmp_path: Path) -> None:
    # srun --mpi=pmi2 (through SLURM_MPI_TYPE) with the mpich wheel's mpi4py: PMI gives the ranks
    (tmp_path / "prop.toml").write_text(
        'name = "prop"\n[defaults]\npreset = "tiny"\nworld_sizes = [2]\nsetup = ["export SLURM_MPI_TYPE=pmi2"]\n'
        '[[grid]]\ntask = "ltsf"\nmethods = ["propulate"]\nmethod_params = { generations = 2, space = "lr" }\n')
    states = sbatch_campaign(slurm_env, tmp_path, tmp_path / "prop.toml")
    assert list(states.values()) == ["COMPLETED"], states
    found = Store(tmp_path / "r").execute("SELECT parent_key, status, samples FROM runs").fetchall()
    parents = [r for r in found if r[0] is None]
    trials = [r for r in found if r[0] is not None]
    assert len(parents) == 1 and parents[0][1] == "ok"
    assert len(trials) == 2 * 2 and {t[0] for t in trials} == {Store(tmp_path / "r").execute(
        "SELECT run_key FROM runs WHERE parent_key IS NULL").fetchall()[0][0]}
    assert parents[0][2] == sum(t[2] for t in trials)  # the search carries both workers' trials
