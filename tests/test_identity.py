"""Rows you can trust: the experiment key, runner-owned budgets, honest parameters, attempts,
and options checked in the driver (issue 15)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from joulebench.harness import identity
from joulebench.harness.cli import main
from joulebench.harness.params import SpecError
from joulebench.harness.registry import registry
from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store

PLUGINS = Path(__file__).parent / "plugins"


def resolved(**spec):
    return resolve(RunSpec.parse({"task": "ltsf", "preset": "tiny", **spec}))


# -- identity -------------------------------------------------------------------------------------
def test_campaign_name_and_timeout_are_labels_not_identity() -> None:
    a, b = resolved(campaign="first", timeout_s=100), resolved(campaign="second", timeout_s=900)
    assert a.run_key == b.run_key and a.cell_key == b.cell_key
    other_seed = resolved(seed=1)
    assert other_seed.run_key != a.run_key and other_seed.cell_key == a.cell_key
    assert resolved(budget={"steps": 3}).cell_key != a.cell_key
    assert a.identity()["hardware_class"].startswith("cpu:") and a.code_hash


def test_two_campaign_files_plan_the_same_keys(tmp_path: Path) -> None:
    from joulebench.cluster.campaign import Campaign, resolve_runs

    body = '[defaults]\npreset = "tiny"\nseeds = [0]\n{extra}\n[[grid]]\ntask = "ltsf"\nmethods = ["backprop"]\n'
    keys = []
    for name, extra in (("one", ""), ("two", "timeout_s = 500")):
        path = tmp_path / f"{name}.toml"
        path.write_text(f'name = "{name}"\n' + body.format(extra=extra))
        keys.append([s.run_key for s, _ in resolve_runs(Campaign.load(path))])
    assert keys[0] == keys[1] == [resolved().run_key]


def _copy_sources(dest: Path) -> dict[str, Path]:
    roots = {}
    for name, src in identity.package_roots().items():
        roots[name] = dest / name
        shutil.copytree(src, roots[name], ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return roots


def test_editing_an_imported_module_changes_only_its_importers_keys(tmp_path: Path) -> None:
    roots = _copy_sources(tmp_path)

    def code(task: str, method: str) -> str:
        return identity.code_hash(identity.import_closure([task, method, *identity.TRAINING_LOOP],
                                                          roots=roots))

    backprop = ("joulebench.tasks.ltsf.task", "joulebench.methods.backprop")
    sorter = ("joulebench.tasks.pet.task", "joulebench.methods.time_window_sorter")
    before = code(*backprop), code(*sorter)
    with open(roots["methods"] / "optim.py", "a") as fh:
        fh.write("\n# an edit to the optimiser module\n")
    after = code(*backprop), code(*sorter)
    assert after[0] != before[0], "backprop imports methods/optim.py: its key must change"
    assert after[1] == before[1], "the sorter does not import optim.py: its key must stay"
    assert "joulebench.methods.optim" in registry().closure("ltsf", "backprop")
    assert "joulebench.methods.optim" not in registry().closure("pet", "time_window_sorter")


def test_an_in_place_fix_of_a_data_file_changes_the_key(tmp_path: Path) -> None:
    csv = tmp_path / "ETTh1.csv"
    csv.write_text("date,OT\n2016-07-01 00:00:00,1.0\n")
    stamp = csv.stat()
    first = resolved(preset="full", task_params={"data_dir": str(tmp_path)})
    csv.write_text("date,OT\n2016-07-01 00:00:00,2.0\n")  # same size
    os.utime(csv, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # same mtime
    second = resolved(preset="full", task_params={"data_dir": str(tmp_path)})
    assert first.data_fingerprint and second.data_fingerprint != first.data_fingerprint
    assert second.run_key != first.run_key
    assert resolved().data_fingerprint is None  # generated data: its code is in the key


def test_a_parameter_applies_only_where_it_means_something() -> None:
    dlinear = resolved(task_params={"model": "dlinear"})
    assert "patch_len" not in dlinear.task_params and "d_model" not in dlinear.task_params
    patchtst = resolved(task_params={"model": "patchtst", "patch_len": 8})
    assert patchtst.task_params["patch_len"] == 8
    with pytest.raises(SpecError, match="'patch_len' applies only when model in"):
        resolved(task_params={"model": "dlinear", "patch_len": 8})


# -- the runner owns the budget -------------------------------------------------------------------
def test_a_method_that_never_reports_stops_at_its_budget_and_fails(results: Path) -> None:
    registry([str(PLUGINS / "silent_method.py")])
    spec = resolve(RunSpec(task="ltsf", method="silent", preset="tiny", budget={"steps": 5}))
    t0 = time.perf_counter()
    row = Runner(Store(results)).run(spec)
    assert time.perf_counter() - t0 < 10
    assert row["steps"] == 5 and row["samples"] == 5 * 32
    assert row["status"] == "failed" and "never called ctx.step" in row["error"]


def test_a_parameter_set_but_never_read_fails_the_run(results: Path) -> None:
    registry([str(PLUGINS / "unread_param_method.py")])
    spec = resolve(RunSpec(task="ltsf", method="unread", preset="tiny", budget={"steps": 2},
                           method_params={"warmup": 5}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "failed"
    assert "method 'unread' parameter 'warmup' set but never read" in row["error"]
    ok = Runner(Store(results)).run(resolve(RunSpec(task="ltsf", method="unread", preset="tiny",
                                                   budget={"steps": 2}, method_params={"lr": 0.1})))
    assert ok["status"] == "ok" and '"lr"' in ok["params_read"]


def test_check_names_declared_parameters_nothing_reads(capsys: pytest.CaptureFixture) -> None:
    from joulebench.harness.check import check_plugin

    code = check_plugin(PLUGINS / "unread_param_method.py", only_tasks=("ltsf",))
    out = capsys.readouterr().out
    assert code == 1 and "never reads: warmup" in out and "lr" not in out.split("never reads:")[1]


def _agree_ranks(rank: int, init_file: str, results: str, out_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    from joulebench.harness.context import DistInfo

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    registry([str(PLUGINS / "jitter_method.py")])
    runner = Runner(Store(Path(results)), dist=DistInfo(rank=rank, world_size=2, local_rank=rank,
                                                        backend="gloo"))
    steps = []
    for seed in range(10):
        spec = resolve(RunSpec(task="ltsf", method="jitter", preset="tiny", seed=seed, world_size=2,
                               budget={"seconds": 0.6}))
        steps.append(runner.run(spec)["steps"])
    gathered: list = [None, None]
    dist.all_gather_object(gathered, steps)
    if rank == 0:
        Path(out_dir, "steps.txt").write_text(repr(gathered))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(900)  # without the agreement the ranks' collectives mismatch and gloo hangs
def test_two_ranks_with_a_seconds_budget_stop_at_the_same_step(tmp_path: Path) -> None:
    mp.spawn(_agree_ranks, args=(str(tmp_path / "init"), str(tmp_path / "results"), str(tmp_path)),
             nprocs=2, join=True)
    rank0, rank1 = eval((tmp_path / "steps.txt").read_text())
    assert len(rank0) == 10 and sum(s > 0 for s in rank0) >= 5
    assert rank0 == rank1, f"ranks stopped at different steps: {rank0} vs {rank1}"


# -- attempts and cells ---------------------------------------------------------------------------
def test_a_failed_forced_rerun_keeps_the_good_row(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry([str(PLUGINS / "flaky_method.py")])
    spec = resolve(RunSpec(task="ltsf", method="flaky", preset="tiny", budget={"steps": 2}))
    store = Store(results)
    assert Runner(store).run(spec)["status"] == "ok"
    monkeypatch.setenv("JOULEBENCH_TEST_FLAKY", "1")
    assert Runner(store).run(spec)["status"] == "failed"
    assert spec.run_key in store.stored_keys()
    shown = store.execute("SELECT status FROM runs WHERE run_key = ?", [spec.run_key]).fetchall()
    assert shown == [("ok",)]


def test_runs_of_different_budgets_are_different_cells(results: Path) -> None:
    store = Store(results)
    runner = Runner(store)
    for steps, campaign in ((6, "a"), (3, "a"), (6, "b")):  # the third is the first under a new name
        spec = resolved(budget={"steps": steps}, campaign=campaign)
        if spec.run_key not in store.stored_keys():
            runner.run(spec)
    cells = store.execute("SELECT budget_steps, seeds FROM leaderboard WHERE task = 'ltsf' "
                          "ORDER BY budget_steps").fetchall()
    assert cells == [(3, 1), (6, 1)]


# -- options are checked before anything runs -----------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["--region", "XYZ"], "unknown region 'XYZ'"),
    (["--steps", "0"], "budget.steps"),
    (["--seconds", "-1"], "budget.seconds"),
    (["--seed", str(2**63)], "seed"),
    (["-T", "model=dlinear", "-T", "patch_len=4"], "applies only when"),
])
def test_bad_run_options_are_one_line_and_store_nothing(results: Path, capsys: pytest.CaptureFixture,
                                                        args: list[str], words: str) -> None:
    code = main(["run", "--task", "ltsf", "--results", str(results), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1
    assert not results.exists() or not list(results.rglob("*.parquet"))


def test_zero_jobs_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "c.toml"
    path.write_text('name = "c"\n[[grid]]\ntask = "ltsf"\nmethods = ["backprop"]\n')
    code = main(["campaign", "run", str(path), "-j", "0", "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "-j/--jobs must be at least 1" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_version_1_store_still_reads_marked_as_keyed_the_old_way(results: Path) -> None:
    from datetime import UTC, datetime

    import pyarrow as pa

    from joulebench.harness.schema import RUNS_V1, to_table
    from joulebench.harness.store import write_atomic

    now = datetime.now(UTC)
    row = {"run_key": "old0123456789", "task": "ltsf", "method": "backprop", "model": "dlinear",
           "preset": "tiny", "seed": 0, "status": "ok", "primary_metric": "mse", "primary_value": 0.5,
           "task_params": "{}", "method_params": "{}", "started_at": now, "finished_at": now}
    table = to_table([row], RUNS_V1)
    table = table.set_column(0, "schema_version", pa.array([1], pa.int32()))
    write_atomic(table, results / "runs" / "task=ltsf" / "old0123456789.parquet")
    store = Store(results)
    assert store.execute("SELECT key_scheme FROM runs").fetchall() == [("v1",)]
    assert store.execute("SELECT key_scheme, seeds FROM leaderboard").fetchall() == [("v1", 1)]


def test_a_search_key_covers_the_code_of_the_method_it_searches() -> None:
    reg = registry()
    spec = resolved(method="optuna", method_params={"inner": "oialr"})
    assert "joulebench.methods.oialr" in reg.closure("ltsf", "optuna", spec.method_params)
    assert spec.code_hash != resolved(method="optuna", method_params={"inner": "backprop"}).code_hash


def test_a_model_with_nothing_to_train_ignores_the_methods_parameters(results: Path) -> None:
    spec = resolved(task_params={"model": "seasonal_naive"}, method_params={"lr": 0.01})
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]


def test_a_new_import_counts_even_when_size_and_mtime_are_restored(tmp_path: Path) -> None:
    """The import scanner's cache (per process and on disk) must not hide an edit that adds an
    import: the key would then miss a module the run now uses."""
    roots = _copy_sources(tmp_path)
    closure = lambda: identity.import_closure(["joulebench.methods.backprop"], roots=roots)  # noqa: E731
    assert "joulebench.methods.lowrank" not in closure()
    path = roots["methods"] / "backprop.py"
    text, st = path.read_text(), path.stat()
    line = "import joulebench.methods.lowrank\n"
    edited = text.replace("import torch\n", "import torch\n" + line, 1).replace(
        "the baseline every other method is measured against", "the baseline".ljust(51 - len(line)), 1)
    assert len(edited) == len(text), (len(edited), len(text))
    path.write_text(edited)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    assert "joulebench.methods.lowrank" in closure()
