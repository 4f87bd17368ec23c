"""Scoring on hand-built rows: three entries, three workloads, one entry that never reaches its
target on one workload; the profile and the score are computed by hand in the comments."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from joulebench.harness.scoring import (
    INF,
    format_scores,
    median_cost,
    plot_profiles,
    profile,
    ratios,
    score,
    score_group,
    score_suite,
    workload_costs,
)
from joulebench.harness.store import Store
from joulebench.harness.suite import load_suite

# median energy-to-target (J) per workload; C never reaches the target on w3
#          A     B     C
# w1     100   200   500     ratios 1, 2, 5
# w2     300   150   150     ratios 2, 1, 1
# w3      50   100   inf     ratios 1, 2, inf
# tau_max = 4: a workload with ratio r <= 4 adds (4 - r) / 3 / 3 to the score
#   A: (3 + 2 + 3) / 9 = 8/9;  B: (2 + 3 + 2) / 9 = 7/9;  C: (0 + 3 + 0) / 9 = 1/3
MEDIANS = {"w1": {"A": 100, "B": 200, "C": 500}, "w2": {"A": 300, "B": 150, "C": 150},
           "w3": {"A": 50, "B": 100, "C": INF}}


def hand_built_trials() -> pd.DataFrame:
    """Three seeds per cell around each median; C reaches w3's target in one seed of three."""
    rows = []
    for workload, entries in MEDIANS.items():
        for entry, mid in entries.items():
            values = [mid * 0.9, mid, mid * 1.5] if math.isfinite(mid) else [80.0, INF, INF]
            for seed, v in enumerate(values):
                rows.append({"group": "cpu:test / energy estimated", "workload": workload, "entry": entry,
                             "seed": seed, "energy_to_target_j": v,
                             "time_to_target_s": v / 10 if math.isfinite(v) else math.nan})
    return pd.DataFrame(rows)


def test_median_counts_missing_and_unreached_seeds_as_infinite():
    assert median_cost([1.0, 2.0, 3.0], 3) == 2.0
    assert median_cost([1.0, INF, INF], 3) == INF
    assert median_cost([1.0, 2.0], 3) == 2.0      # the third seed was never run: inf
    assert median_cost([1.0], 3) == INF
    assert median_cost([1.0, 3.0], 2) == 2.0


def test_hand_built_profile_and_score():
    costs = workload_costs(hand_built_trials(), {"w1": 3, "w2": 3, "w3": 3})
    result = score_group(costs, "cpu:test / energy estimated", "energy", 4.0, ["w1", "w2", "w3"])
    assert result.costs.loc["w3", "C"] == INF
    assert result.costs.loc["w1", "B"] == 200
    assert result.ratios.loc["w1"].tolist() == [1.0, 2.0, 5.0]
    assert result.ratios.loc["w3", "C"] == INF
    assert result.scores.to_dict() == pytest.approx({"A": 8 / 9, "B": 7 / 9, "C": 1 / 3})
    assert list(result.scores.index) == ["A", "B", "C"]
    taus = np.array([1.0, 1.5, 2.0, 4.0, 5.0])
    assert profile(result.ratios["A"], taus).tolist() == pytest.approx([2 / 3, 2 / 3, 1, 1, 1])
    assert profile(result.ratios["B"], taus).tolist() == pytest.approx([1 / 3, 1 / 3, 1, 1, 1])
    assert profile(result.ratios["C"], taus).tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3])
    # the exact area equals a fine numerical integral of the step function
    fine = np.linspace(1.0, 4.0, 300_001)
    for entry, value in result.scores.items():
        assert np.trapezoid(profile(result.ratios[entry], fine), fine) / 3 == pytest.approx(value, abs=1e-4)


def test_a_workload_nobody_reaches_gives_nobody_credit():
    table = pd.DataFrame({"A": [1.0, INF], "B": [2.0, INF]}, index=["w1", "w2"])
    r = ratios(table)
    assert r.loc["w2"].tolist() == [INF, INF]
    assert score(r["A"], 4.0) == pytest.approx(0.5)


def test_time_is_scored_on_its_own_column():
    costs = workload_costs(hand_built_trials(), {"w1": 3, "w2": 3, "w3": 3})
    result = score_group(costs, "cpu:test / energy estimated", "time", 4.0, ["w1", "w2", "w3"])
    assert result.costs.loc["w1", "A"] == pytest.approx(10.0)
    assert result.scores["A"] == pytest.approx(8 / 9)


def test_profile_plot_is_written_as_png_and_svg(tmp_path):
    costs = workload_costs(hand_built_trials(), {"w1": 3, "w2": 3, "w3": 3})
    result = score_group(costs, "cpu:test / energy estimated", "energy", 4.0, ["w1", "w2", "w3"])
    paths = plot_profiles([result], tmp_path / "profiles")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and b"<svg" in paths[1].read_bytes()[:500]


# -- from a store: costs read from validation curves at the suite's target ---------------------------
T0 = datetime(2026, 1, 1, tzinfo=UTC)
APP = str(Path(__file__).resolve().parents[1] / "leaderboard" / "app.py")


def stored_run(store: Store, key: str, method: str, seed: int, workload, val: list[float],
               seconds_per_point: float) -> None:
    """A row as the runner writes it for a cpu-v1 workload, with one validation point per 10 steps."""
    budget = workload.budget.model_dump()
    started = T0 + timedelta(minutes=seed)
    store.write_run({
        "run_key": key, "task": workload.task, "preset": workload.preset, "method": method, "model": "mlp",
        "seed": seed, "status": "ok", "primary_metric": "mse" if workload.task == "ltsf" else "crps",
        "higher_is_better": False, "primary_value": val[-1], "device": "cpu", "world_size": 1,
        "task_params": json.dumps(workload.task_params), "method_params": json.dumps({"lr": 0.001}),
        "budget_steps": budget["steps"], "budget_epochs": budget["epochs"], "budget_seconds": budget["seconds"],
        "energy_estimated": True, "cpu_model": "Test CPU", "spec_json": json.dumps({"source_hash": "abc"}),
        "started_at": started, "finished_at": started + timedelta(seconds=30)},
        [{"run_key": key, "task": workload.task, "method": method, "run_started_at": started, "split": "val",
          "step": 10 * (i + 1), "train_s": seconds_per_point * (i + 1),
          "train_energy_j": 10.0 * seconds_per_point * (i + 1),
          "metrics_json": json.dumps({"mse" if workload.task == "ltsf" else "crps": v})}
         for i, v in enumerate(val)])


@pytest.fixture
def suite_store(results: Path) -> Path:
    suite = load_suite("cpu-v1")
    ltsf, load = suite.workloads[0], suite.workloads[1]
    store = Store(results)
    hit = ltsf.target * 0.9
    for seed in (0, 1, 2):
        # backprop reaches the LTSF target at its 2nd point (2 s), fancy at its 1st (1.5 s)
        stored_run(store, f"b{seed}", "backprop", seed, ltsf, [1.0, hit, hit], 1.0)
        stored_run(store, f"f{seed}", "fancy", seed, ltsf, [hit, hit], 1.5)
        # on load backprop reaches at 1 s, fancy never does
        stored_run(store, f"lb{seed}", "backprop", seed, load, [load.target - 1], 1.0)
        stored_run(store, f"lf{seed}", "fancy", seed, load, [load.target + 1], 1.0)
    return results


def test_store_costs_come_from_the_curves_at_the_suite_target(suite_store: Path):
    suite = load_suite("cpu-v1")
    trials, results = score_suite(Store(suite_store), suite)
    assert len(trials) == 12 and set(trials["hw"]) == {"cpu:Test CPU"}
    energy = next(s for s in results if s.quantity == "energy")
    assert energy.group == "cpu:Test CPU / energy estimated"
    assert energy.costs.loc["ltsf-mlp", "backprop"] == pytest.approx(20.0)
    assert energy.costs.loc["ltsf-mlp", "fancy"] == pytest.approx(15.0)
    assert energy.costs.loc["load-mlp", "fancy"] == INF
    # five workloads, three never run: ltsf ratios 4/3 and 1, load 1 and inf
    assert energy.scores["backprop"] == pytest.approx(((4 - 4 / 3) + 3) / 3 / 5)
    assert energy.scores["fancy"] == pytest.approx(3 / 3 / 5)
    text = format_scores(suite, results, trials)
    assert "| backprop |" in text and "not reached" in text and "proportional to time" in text


def test_suite_tab_shows_profiles_scores_and_cells(suite_store: Path, monkeypatch):
    monkeypatch.setenv("JOULEBENCH_RESULTS", str(suite_store))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["page"] = "suite"
    at.run()
    assert not at.exception, at.exception
    profiles = [c for c in at.get("vega_lite_chart") if "rho" in c.proto.spec]
    assert len(profiles) == 2
    frames = [d.value for d in at.dataframe]
    scores = [f for f in frames if "energy score" in f.columns]
    assert scores and scores[0].index[0] == "backprop"
    assert any("energy_to_target_j" in f.columns and len(f) == 6 for f in frames)


def test_the_score_says_why_an_entry_has_no_run_on_a_workload(results: Path):
    suite = load_suite("cpu-v1")
    store = Store(results)
    ltsf = suite.workloads[0]
    for seed in (0, 1, 2):
        stored_run(store, f"g{seed}", "forward_gradient", seed, ltsf, [ltsf.target * 0.9], 1.0)
    trials, scores = score_suite(store, suite)
    text = format_scores(suite, scores, trials)
    assert ("forward_gradient on pet-petnet: forward_gradient cannot train pet: pet does not provide "
            "functional (not reached)") in text
    assert "forward_gradient on load-mlp: no run stored (not reached)" in text
    assert "forward_gradient on ltsf-mlp" not in text
