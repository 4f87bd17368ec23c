"""Measured targets: `suite calibrate` derives each target from the baseline's stored runs by the
suite's rule, records the task code it was set on, and `suite show` / `score` flag a stale target."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from joulebench.harness.cli import main
from joulebench.harness.params import SpecError
from joulebench.harness.scoring import calibrate, format_scores, score_suite, write_targets
from joulebench.harness.spec import resolve
from joulebench.harness.store import Store
from joulebench.harness.suite import describe, load_suite, parse_suite, stale_lines, task_code

DRAFT = """
name = "cal"
version = 1
seeds = [0, 1, 2]
target_rule = "median-best"
[[workload]]
name = "ltsf-mse"
task = "ltsf"
preset = "tiny"
task_params = { model = "dlinear" }
budget = { steps = 5 }
[[workload]]
name = "pet-f1"
task = "pet"
preset = "tiny"
budget = { steps = 5 }
"""
VALUES = {"ltsf-mse": {0: [0.9, 0.5, 0.6], 1: [0.8, 0.4], 2: [0.7]},      # lower is better: best .5 .4 .7
          "pet-f1": {0: [0.1, 0.3], 1: [0.6, 0.2], 2: [0.2, 0.25, 0.22]}}  # higher is better: best .3 .6 .25
METRIC = {"ltsf-mse": ("mse", False), "pet-f1": ("f1", True)}


def write_row(store: Store, key: str, workload, seed: int, values: list[float]) -> None:
    metric, higher = METRIC[workload.name]
    started = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(minutes=seed)
    store.write_run({
        "run_key": key, "task": workload.task, "preset": workload.preset, "method": "backprop", "seed": seed,
        "status": "ok", "primary_metric": metric, "higher_is_better": higher, "primary_value": values[-1],
        "device": "cpu", "world_size": 1, "task_params": json.dumps(workload.task_params),
        "method_params": "{}", "budget_steps": 5, "energy_estimated": True, "cpu_model": "Test CPU",
        "spec_json": "{}", "started_at": started, "finished_at": started + datetime.timedelta(seconds=3)},
        [{"run_key": key, "task": workload.task, "method": "backprop", "run_started_at": started,
          "split": "val", "step": i + 1, "train_s": float(i + 1), "train_energy_j": 10.0 * (i + 1),
          "metrics_json": json.dumps({metric: v})} for i, v in enumerate(values)])


@pytest.fixture
def calibrated(tmp_path: Path, results: Path) -> tuple[Path, Path]:
    """The draft suite and a store with the baseline's runs (the keys the suite asks of it now),
    plus one run of an older code with a better value that calibration must not read."""
    draft = tmp_path / "cal.toml"
    draft.write_text(DRAFT)
    suite = load_suite(draft)
    store = Store(results)
    for w, spec in suite.run_specs("backprop"):
        write_row(store, resolve(spec).run_key, w, spec.seed, VALUES[w.name][spec.seed])
    write_row(store, "older-code-key", suite.workloads[0], 0, [0.01])
    return draft, results


def test_calibration_on_hand_built_rows_gives_the_hand_computed_targets(calibrated):
    draft, results = calibrated
    suite = load_suite(draft)
    assert not suite.calibrated and describe(suite).count("not calibrated") == 2
    out = calibrate(Store(results), suite, "backprop", datetime.date(2026, 12, 2))
    assert [(c.workload, c.target) for c in out] == [("ltsf-mse", 0.5), ("pet-f1", 0.3)]
    assert out[0].target_set.best == (0.5, 0.4, 0.7) and out[1].target_set.best == (0.3, 0.6, 0.25)
    assert out[0].target_set.task_code == task_code("ltsf") and out[1].target_set.task_code == task_code("pet")
    text = write_targets(draft.read_text(), out)
    written = parse_suite(text, draft)
    assert [w.target for w in written.workloads] == [0.5, 0.3] and written.calibrated
    assert written.workloads[1].target_set.date == datetime.date(2026, 12, 2)
    assert stale_lines(written) == []
    with pytest.raises(SpecError, match="targets never change"):
        write_targets(text, out)


def test_calibrate_command_writes_the_suite_and_a_missing_seed_is_a_one_line_error(calibrated, tmp_path, capsys):
    draft, results = calibrated
    out = tmp_path / "cal-measured.toml"
    assert main(["suite", "calibrate", str(draft), "--method", "backprop", "--results", str(results),
                 "--write", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| ltsf-mse | val mse (lower is better) | 0: 0.5, 1: 0.4, 2: 0.7 | 0.5 |" in printed
    assert [w.target for w in load_suite(out).workloads] == [0.5, 0.3]
    # an uncalibrated suite cannot score; a calibrated one can
    with pytest.raises(SpecError, match="no target yet for ltsf-mse, pet-f1"):
        score_suite(Store(results), load_suite(draft))
    trials, scores = score_suite(Store(results), load_suite(out))
    assert len(trials) == 7 and scores  # the older-code row too: hand-built, it has no code hash to tell it apart
    # a baseline with no runs stored: the seeds are named, on one line
    assert main(["suite", "calibrate", str(draft), "--method", "oialr", "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no ok run of oialr on the current code for seeds [0, 1, 2]" in err and "\n" not in err


MEASURED = DRAFT.replace('name = "ltsf-mse"\n', 'name = "ltsf-mse"\ntarget = 0.5\ntarget_set = { baseline = '
                         '"backprop", seeds = [0, 1, 2], best = [0.5, 0.4, 0.7], task_code = "CODE", '
                         'date = 2026-12-02 }\n').replace(
    'name = "pet-f1"\n', 'name = "pet-f1"\ntarget = 0.3\ntarget_set = { baseline = "backprop", '
    'seeds = [0, 1, 2], best = [0.3, 0.6, 0.25], task_code = "PETCODE", date = 2026-12-02 }\n')


def test_a_target_set_on_other_task_code_is_flagged_stale_in_show_and_score(calibrated, tmp_path):
    _, results = calibrated
    fresh = MEASURED.replace("PETCODE", task_code("pet"))
    suite = parse_suite(fresh.replace('"CODE"', f'"{task_code("ltsf")}"'), tmp_path / "s.toml")
    assert stale_lines(suite) == [] and "STALE" not in describe(suite)
    stale = parse_suite(fresh.replace('"CODE"', '"0123456789abcdef"'), tmp_path / "s.toml")
    line = (f"ltsf-mse: target set on code 0123456789abcdef (2026-12-02); the task 'ltsf' is now "
            f"{task_code('ltsf')}: stale")
    assert stale_lines(stale) == [line]
    assert f"STALE: {line}" in describe(stale)
    trials, scores = score_suite(Store(results), stale)
    assert f"STALE: {line}" in format_scores(stale, scores, trials)


def test_cpu_v1_flags_its_load_target_stale_and_cpu_v2_targets_are_measured():
    v1 = load_suite("cpu-v1")
    assert v1.target_rule is None and any(line.startswith("load-mlp: target set on code b0e82c8a7ce3dae4")
                                          for line in stale_lines(v1))
    v2 = load_suite("cpu-v2")
    assert v2.target_rule == "median-best" and v2.calibrated
    assert [(w.name, w.task, w.preset, w.task_params, w.budget) for w in v2.workloads] == \
        [(w.name, w.task, w.preset, w.task_params, w.budget) for w in v1.workloads]
    assert all(w.target_set.baseline == "backprop" and len(w.target_set.best) == 3 for w in v2.workloads)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('"median-best"', '"median-worst"'), "target_rule: Input should be 'median-best'"),
    (lambda t: t.replace('"CODE"', '"not-hex"'), "task_code: String should match pattern"),
    (lambda t: t.replace("best = [0.5, 0.4, 0.7]", "best = [0.5, 0.4]"), "2 best values for 3 seeds"),
    (lambda t: t.replace("target = 0.5\n", "target = 0.45\n"),
     "target 0.45 is not the median-best of its recorded values (0.5): targets are measured, not typed"),
    (lambda t: t.replace("best = [0.5, 0.4, 0.7], ", ""), "has no target_set with best values"),
    (lambda t: t.replace("seeds = [0, 1, 2], best = [0.5", "seeds = [0, 1, 5], best = [0.5"),
     "target_set seeds [0, 1, 5] are not the workload's seeds [0, 1, 2]"),
    (lambda t: t.replace("date = 2026-12-02", 'date = "yesterday"', 1), "date: Input should be a valid date"),
])
def test_bad_target_fields_are_one_line_errors(tmp_path, capsys, edit, message):
    path = tmp_path / "suite.toml"
    path.write_text(edit(MEASURED).replace('"CODE"', '"0123456789abcdef"').replace('"PETCODE"', '"0123456789abcdef"'))
    assert main(["suite", "show", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
