"""Search methods: each trial is a child run; the search row adopts the best and pays for all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from joulebench.harness.registry import registry
from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.methods.propulate_search import decode, import_propulate, limits_for
from joulebench.methods.search import search_space, trial_budget


def test_optuna_search_stores_one_parent_and_one_child_per_trial(results: Path) -> None:
    spec = resolve(RunSpec(task="ltsf", method="optuna", preset="tiny",
                           method_params={"trials": 3, "space": "lr"}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]
    con = Store(results).connect()
    children = con.execute("SELECT run_key, val_mse, p_lr, samples, train_s FROM runs "
                           "WHERE parent_key = ?", [spec.run_key]).fetchall()
    assert len(children) == 3 and len({c[2] for c in children}) == 3
    best = min(children, key=lambda c: c[1])
    assert row["x_best_trial"] == best[0] and row["val_mse"] == pytest.approx(best[1])
    assert json.loads(row["x_best_params"])["lr"] == pytest.approx(best[2])
    assert row["samples"] == sum(c[3] for c in children)
    assert row["train_s"] >= sum(c[4] for c in children)  # the search pays for every trial
    assert con.execute("SELECT count(*) FROM leaderboard WHERE method = 'backprop'").fetchone() == (0,)
    curve = con.execute("SELECT step, metrics_json FROM curves WHERE run_key = ? ORDER BY step",
                        [spec.run_key]).fetchall()
    values = [json.loads(m)["mse"] for _, m in curve]
    assert [s for s, _ in curve] == [1, 2, 3] and values == sorted(values, reverse=True)


def test_search_space_rejects_unknown_and_unranged_parameters() -> None:
    registry()
    with pytest.raises(ValueError, match="no parameter 'lrr'"):
        search_space("backprop", "lrr")
    space = search_space("backprop", "lr,optimizer,warmup_steps")
    limits = limits_for(space)
    assert set(limits) == {"log10_lr", "optimizer", "warmup_steps"}
    assert decode(space, {"log10_lr": -2.0, "optimizer": "sgd", "warmup_steps": 3}) == \
        {"lr": pytest.approx(0.01), "optimizer": "sgd", "warmup_steps": 3}


def test_propulate_imports_beside_numpy_2() -> None:
    propulate, get_default_propagator = import_propulate()
    assert hasattr(propulate, "Islands") and callable(get_default_propagator)


PROPULATE_CAMPAIGN = """
name = "prop"
[defaults]
preset = "tiny"
world_sizes = [2]
[[grid]]
task = "ltsf"
methods = ["propulate"]
method_params = {{ generations = {generations}, space = "lr" }}
"""


def _campaign(tmp_path: Path, generations: int) -> tuple[list[str], dict]:
    import os
    import sys

    path = tmp_path / "prop.toml"
    path.write_text(PROPULATE_CAMPAIGN.format(generations=generations))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "joulebench.harness.cli", "campaign", "run", str(path),
           "--results", str(tmp_path / "r"), "--launcher", "mpiexec"]
    return cmd, env


def _rows(tmp_path: Path) -> list[tuple]:
    return Store(tmp_path / "r").execute(
        "SELECT parent_key, status, samples, train_energy_j, train_energy_cpu_j, train_energy_dram_j FROM runs").fetchall()


def test_two_rank_propulate_search_leaves_a_parent_and_its_trials(tmp_path: Path) -> None:
    import subprocess

    cmd, env = _campaign(tmp_path, generations=3)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = _rows(tmp_path)
    parents = [r for r in rows if r[0] is None]
    children = [r for r in rows if r[0] is not None]
    assert len(parents) == 1 and parents[0][1] == "ok"
    assert len(children) == 2 * 3  # two workers, three generations each
    assert parents[0][2] == sum(c[2] for c in children)  # samples of every trial, both ranks
    # and their energy: the process-level CPU figures add up; codecarbon's RAM floor is node-level,
    # so the parent counts it once per node while trials running at once on both ranks each carry it
    assert parents[0][4] >= sum(c[4] for c in children)
    assert parents[0][3] > 0


def _checkpoint_has_both_workers(work: Path) -> bool:
    import pickle

    import_propulate()  # unpickling individuals imports propulate

    for file in work.rglob("island_0_ckpt.pickle"):
        try:
            return {ind.rank for ind in pickle.loads(file.read_bytes())} >= {0, 1}
        except Exception:  # being written right now
            return False
    return False


def test_killed_propulate_search_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    cmd, env = _campaign(tmp_path, generations=6)
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    runs = tmp_path / "r" / "runs"
    deadline = time.time() + 120
    while time.time() < deadline and not _checkpoint_has_both_workers(tmp_path / "r" / "work"):
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    # mpiexec's ranks live in sessions of their own: kill whatever still works on this store
    subprocess.run(["pkill", "-9", "-f", str(tmp_path / "r")], check=False)
    time.sleep(0.5)
    trials_before = len(list(runs.rglob("*.parquet")))  # only trials: the search row comes last
    assert 2 <= trials_before < 12
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = _rows(tmp_path)
    children = [r for r in rows if r[0] is not None]
    parent = [r for r in rows if r[0] is None][0]
    # resumed, not restarted: the second attempt ran fewer than the 12 trials of a fresh search;
    # at most one trial per worker (evaluated after the last checkpoint) is evaluated again
    assert len(children) - trials_before < 12 and len(children) <= 12 + 2
    earlier = Store(tmp_path / "r").execute(
        "SELECT x_earlier_trials FROM runs WHERE parent_key IS NULL").fetchone()[0]
    assert parent[1] == "ok" and earlier >= 1  # and it pays for the trials before the kill


def test_autopq_search_over_forecaster_and_spread_charges_every_trial(results: Path) -> None:
    spec = resolve(RunSpec(task="load", method="optuna", preset="tiny",
                           method_params={"trials": 3, "space": "lr,task.model,task.spread"}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]
    children = Store(results).execute("SELECT p_model, p_spread, total_energy_j FROM runs "
                                      "WHERE parent_key = ?", [spec.run_key]).fetchall()
    assert len(children) == 3 and len({c[1] for c in children}) == 3
    best = json.loads(row["x_best_params"])
    assert set(best) == {"lr", "task.model", "task.spread"}
    with pytest.raises(ValueError, match="task 'load' has no parameter 'nope'"):
        search_space("backprop", "task.nope", "load")


def test_a_finished_search_run_again_starts_afresh(results: Path) -> None:
    spec = resolve(RunSpec(task="ltsf", method="optuna", preset="tiny",
                           method_params={"trials": 2, "space": "lr"}))
    runner = Runner(Store(results))
    assert runner.run(spec)["status"] == "ok"
    again = runner.run(spec)  # what --force does
    assert again["status"] == "ok" and "x_earlier_trials" not in again


def test_a_search_given_a_budget_trains_its_trials_on_that_budget(results: Path) -> None:
    """The search's steps are its trials' steps (the tiny preset's own are more): stored, keyed."""
    preset_steps = registry().task_info("ltsf").presets["tiny"].budget["steps"]
    steps = max(1, preset_steps // 4)
    spec = resolve(RunSpec(task="ltsf", method="optuna", preset="tiny", budget={"steps": steps},
                           method_params={"trials": 2, "space": "lr"}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]
    children = Store(results).execute("SELECT budget_steps, gradient_updates FROM runs "
                                      "WHERE parent_key = ?", [spec.run_key]).fetchall()
    assert len(children) == 2
    assert all(c[0] == steps and c[1] == steps for c in children), (children, steps)


def test_trial_budget_hands_on_steps_and_epochs_never_the_search_seconds() -> None:
    search = resolve(RunSpec(task="ltsf", method="optuna", preset="tiny",
                             budget={"steps": 9, "epochs": 2.0, "seconds": 30.0}))
    assert trial_budget(search.budget, "search") == {"steps": 9, "epochs": 2.0}
    assert trial_budget(search.budget, "preset") is None
    assert trial_budget(resolve(RunSpec(task="ltsf", method="optuna", budget={"seconds": 5.0})).budget,
                        "search") is None  # seconds only: the trial trains its preset's budget
    # a search without a budget of its own: its trials keep the keys they had (the preset's budget)
    default = resolve(RunSpec(task="ltsf", method="optuna", preset="tiny"))
    inherited = resolve(RunSpec(task="ltsf", preset="tiny", budget=trial_budget(default.budget, "search")))
    assert inherited.run_key == resolve(RunSpec(task="ltsf", preset="tiny")).run_key


def _tiny(task: str = "ltsf"):
    return registry().task_info(task).presets["tiny"]


def test_a_run_given_more_steps_than_its_preset_gets_a_timeout_in_proportion() -> None:
    """The preset's timeout is sized for the preset's budget: four times its steps, four times
    its timeout (a run killed for training what it was asked to is a harness bug)."""
    preset = _tiny()
    steps = preset.budget["steps"] * 4
    run = resolve(RunSpec(task="ltsf", preset="tiny", budget={"steps": steps}))
    assert run.timeout_s == pytest.approx(4 * preset.timeout_s)
    # fewer steps than the preset's: never less than the preset's (set-up and evaluation stay)
    short = resolve(RunSpec(task="ltsf", preset="tiny", budget={"steps": 1}))
    assert short.timeout_s == pytest.approx(preset.timeout_s)
    # a seconds budget trains that long whatever the preset's steps: it is added to the timeout
    timed = resolve(RunSpec(task="ltsf", preset="tiny", budget={"seconds": 10 * preset.timeout_s}))
    assert timed.timeout_s >= 11 * preset.timeout_s
    # an explicit timeout is the user's, untouched
    assert resolve(RunSpec(task="ltsf", budget={"steps": steps}, timeout_s=7.0)).timeout_s == 7.0


def test_a_search_timeout_follows_the_budget_its_trials_train() -> None:
    """(trials + 1) runs of the trials' budget: a search of 2 trials of 4× the preset's steps."""
    preset = _tiny()
    steps = preset.budget["steps"] * 4
    search = resolve(RunSpec(task="ltsf", method="optuna", preset="tiny", budget={"steps": steps},
                             method_params={"trials": 2}))
    trial = resolve(RunSpec(task="ltsf", preset="tiny", budget=trial_budget(search.budget, "search")))
    assert trial.timeout_s == pytest.approx(4 * preset.timeout_s)
    assert search.timeout_s >= 2 * trial.timeout_s + preset.timeout_s


def test_trials_inherit_the_search_eval_every_and_a_timeout_of_their_budget(results: Path) -> None:
    preset = _tiny()
    every = max(1, preset.budget["steps"] // 4)
    assert every != preset.eval_every
    spec = resolve(RunSpec(task="ltsf", method="optuna", preset="tiny", eval_every=every,
                           budget={"steps": preset.budget["steps"] * 2},
                           method_params={"trials": 1, "space": "lr"}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]
    (spec_json, timeout, child_key), = Store(results).execute(
        "SELECT spec_json, timeout_s, run_key FROM runs WHERE parent_key = ?", [spec.run_key]).fetchall()
    assert json.loads(spec_json)["eval_every"] == every
    assert timeout == pytest.approx(2 * preset.timeout_s)
    steps = [s for (s,) in Store(results).execute("SELECT step FROM curves WHERE run_key = ? ORDER BY step",
                                                   [child_key]).fetchall()]
    assert steps[:2] == [every, 2 * every]  # evaluated at the search's cadence
