"""A campaign's cost before it runs: the forecast's levels, its validation, and the energy cap."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from joulebench.cluster.estimate import (
    FACTOR_MAX_ERROR,
    FACTORS,
    CostFactors,
    basis_factors,
    check_factors,
    choose_energy_model,
    energy_kind,
    fit_energy,
    forecast,
    format_validation,
    loco_errors,
    parse_energy,
)
from joulebench.harness.cli import main
from joulebench.harness.params import SpecError
from joulebench.harness.store import Store


def history_rows() -> pd.DataFrame:
    """Stored rows as `history` returns them: 20 ms per sample for backprop, two lr settings,
    two budgets, three seeds each; energy 40 kJ per device-hour (a codecarbon-like constant)."""
    rows = []
    for lr in (1e-3, 3e-3):
        for steps in (30, 60):
            for seed in range(3):
                samples = steps * 32
                train_s = 0.02 * samples * (1 + 0.03 * (seed - 1))
                rows.append({"task": "ltsf", "preset": "tiny", "model": "dlinear", "method": "backprop",
                             "method_params": json.dumps({"lr": lr}), "task_params": json.dumps({"model": "dlinear"}),
                             "budget_steps": float(steps), "budget_epochs": np.nan, "budget_seconds": np.nan,
                             "world_size": 1, "seed": seed, "samples": samples, "gradient_updates": steps,
                             "epochs": steps / 40, "train_s": train_s, "wall_s": train_s + 1.0,
                             "train_energy_j": 40_000 * train_s / 3600, "train_dh": train_s / 3600})
    return pd.DataFrame(rows)


def target(**changes) -> dict:
    base = {"task": "ltsf", "preset": "tiny", "model": "dlinear", "method": "backprop",
            "method_params": json.dumps({"lr": 1e-3}), "task_params": json.dumps({"model": "dlinear"}),
            "budget_steps": 60, "budget_epochs": None, "budget_seconds": None, "world_size": 1}
    return {**base, **changes}


def test_levels_scale_by_planned_samples_and_say_no_basis():
    rows = history_rows()
    model = fit_energy(rows, linear=False)
    assert model.coef[0] == pytest.approx(40_000)
    same = forecast(target(), rows, model, "x", 400.0)
    assert same.basis == "same configuration" and same.train_s == pytest.approx(0.02 * 60 * 32)
    longer = forecast(target(budget_steps=120), rows, model, "x", 400.0)
    assert longer.basis == "other budget" and longer.train_s == pytest.approx(0.02 * 120 * 32, rel=0.02)
    assert longer.energy_j == pytest.approx(40_000 * longer.train_s / 3600)
    assert longer.co2_g == pytest.approx(longer.energy_j / 3.6e6 * 400.0)
    other_lr = forecast(target(method_params=json.dumps({"lr": 1e-2}), budget_steps=90), rows, model, "x", 0)
    assert other_lr.basis == "other method parameters"
    assert forecast(target(model="mlp", task_params=json.dumps({"model": "mlp"})), rows, model, "x", 0).basis is None
    assert forecast(target(method="f3"), rows, model, "x", 0).basis is None


def test_a_stored_display_name_of_the_model_does_not_hide_the_same_configuration():
    # the load task stores model "mlp+cinn" for task_params {"model": "mlp"}; a plan knows only the latter
    rows = history_rows().assign(model="dlinear+cinn")
    f = forecast(target(), rows, fit_energy(rows, False), "x", 0.0)
    assert f.basis == "same configuration" and f.train_s == pytest.approx(0.02 * 60 * 32)


def test_leave_one_cell_out_error_is_printed_and_small_when_time_scales_with_samples():
    rows = history_rows()
    errors = loco_errors(rows, linear=False)
    assert len(errors) == 4 and set(errors["basis"]) <= {"other budget", "other method parameters"}
    assert errors["err_s"].median() < 0.05
    text = format_validation(rows)
    assert "median absolute error: train seconds" in text and "over 4 cells" in text
    model, candidates = choose_energy_model(rows)
    assert set(candidates) == {"constant", "linear"} and not model.linear or candidates["linear"] < candidates["constant"]


def grid_rows(cost: dict[tuple[str, str], float], noise: float = 0.03) -> pd.DataFrame:
    """Stored rows of a grid campaign: (model, method) → seconds per sample, three seeds each,
    epochs budgets (1,000 samples per epoch), energy 40 kJ per device-hour."""
    rows = []
    for (model, method), per_sample in cost.items():
        for seed in range(3):
            samples = 2_000
            train_s = per_sample * samples * (1 + noise * (seed - 1))
            rows.append({"task": "ltsf", "preset": "small", "model": model, "method": method,
                         "method_params": "{}", "task_params": json.dumps({"model": model}),
                         "budget_steps": np.nan, "budget_epochs": 2.0, "budget_seconds": np.nan,
                         "world_size": 1, "seed": seed, "samples": samples, "gradient_updates": 60,
                         "epochs": 2.0, "train_s": train_s, "wall_s": train_s + 1.0,
                         "train_energy_j": 40_000 * train_s / 3600, "train_dh": train_s / 3600})
    return pd.DataFrame(rows)


def test_factor_model_predicts_a_pair_through_the_grid_by_hand():
    # mlp ran with backprop and f3, dlinear with f3 only: dlinear/backprop = 4e-3 * 1e-3 / 2e-3
    rows = grid_rows({("mlp", "backprop"): 1e-3, ("mlp", "f3"): 2e-3, ("dlinear", "f3"): 4e-3}, noise=0)
    factors = CostFactors(rows)
    dlinear = '{"model": "dlinear"}'
    assert factors.seconds_per_sample(f"ltsf/small {dlinear}", "backprop") == pytest.approx(2e-3)
    assert factors.seconds_per_sample(f"ltsf/small {dlinear}", "dfa") is None  # never ran: not identified
    f = forecast(target(preset="small", model="dlinear", task_params=dlinear, budget_steps=None, budget_epochs=3.0),
                 rows, fit_energy(rows, False), "x", 0.0, factors=factors)
    assert f.basis == FACTORS and f.train_s == pytest.approx(2e-3 * 3_000)
    assert forecast(target(preset="small", model="dlinear", task_params=dlinear, method="dfa"), rows,
                    fit_energy(rows, False), "x", 0.0, factors=factors).basis is None


def test_factor_model_covers_a_grid_left_one_cell_out_and_says_no_basis_off_it():
    models = {"mlp": 1e-3, "dlinear": 1.5e-3, "transformer": 8e-3}
    methods = {"backprop": 1.0, "f3": 0.8, "forward_gradient": 5.0}
    cost = {(m, k): a * b for m, a in models.items() for k, b in methods.items()}
    cost[("mlp", "dfa")] = 0.7e-3  # a method that ran on one workload only
    rows = grid_rows(cost)
    errors = loco_errors(rows, linear=False)
    grid = errors[~errors["cell"].str.endswith("/dfa")]
    assert (grid["basis"] == FACTORS).all() and grid["err_s"].max() < 0.05
    assert errors.loc[errors["cell"].str.endswith("/dfa"), "basis"].tolist() == ["no basis"]
    text = format_validation(rows)
    assert "coverage: 9 of 10 cells got a forecast, 1 no basis" in text and f"{FACTORS}: 9 cells" in text


@pytest.mark.parametrize("text, joules", [("500kJ", 5e5), ("2 MJ", 2e6), ("0.5kWh", 1.8e6), ("800J", 800.0)])
def test_energy_parses_with_units(text, joules):
    assert parse_energy(text) == pytest.approx(joules)


@pytest.mark.parametrize("text", ["500", "-1kJ", "kJ", "lots"])
def test_bad_energy_is_a_one_line_error(text):
    with pytest.raises(SpecError, match="--max-energy"):
        parse_energy(text)


CAMPAIGN = """
name = "capped"
[defaults]
seeds = [0, 1, 2, 3]
budget = { steps = 5 }
[[grid]]
task = "ltsf"
methods = ["backprop"]
preset = "tiny"
task_params = { model = "dlinear" }
"""


@pytest.mark.slow
def test_max_energy_stops_a_campaign_then_refuses_on_the_forecast(tmp_path, results, capsys):
    path = tmp_path / "capped.toml"
    path.write_text(CAMPAIGN)
    common = [str(path), "--results", str(results)]
    # nothing stored: no basis, so the cap cannot refuse; the first finished run reaches it
    code = main(["campaign", "run", *common, "--max-energy", "0.001J", "-j", "1"])
    out = capsys.readouterr().out
    assert "no basis" in out and "energy cap 0.001J reached" in out and "3 runs not started" in out
    assert code == 0
    assert len(Store(results).stored_keys()) == 1
    # now the stored run is a basis for its other seeds: the forecast is above the cap
    assert main(["campaign", "run", *common, "--max-energy", "0.001J"]) == 2
    err = capsys.readouterr().err.strip()
    assert "above --max-energy 0.001J" in err and "\n" not in err
    assert len(Store(results).stored_keys()) == 1
    assert main(["campaign", "plan", *common, "--estimate"]) == 0
    out = capsys.readouterr().out
    assert out.count("same configuration") == 3 and "total (3 of 3 runs with a basis)" in out


_SLOW, _FAST = 1e-2, 1e-3
LATIN_SQUARE = {("mlp", "backprop"): _FAST, ("mlp", "f3"): _FAST, ("mlp", "forward_gradient"): _SLOW,
                ("dlinear", "backprop"): _FAST, ("dlinear", "f3"): _SLOW, ("dlinear", "forward_gradient"): _FAST,
                ("transformer", "backprop"): _SLOW, ("transformer", "f3"): _FAST,
                ("transformer", "forward_gradient"): _FAST}
"""Seconds per sample of a Latin square: each model is slow under a different method, which no
u[workload] + v[method] fits, so every pair the factors identify they miss by 10x or more."""


def test_factor_basis_is_held_back_where_its_own_left_out_error_is_high():
    rows = grid_rows(LATIN_SQUARE)
    check = check_factors(rows)
    assert check.cells == 9 and check.error > FACTOR_MAX_ERROR and check.held_back
    factors, held = basis_factors(rows)
    assert factors is None and held.held_back
    # a pair the factor model identifies is "no basis" once the basis is held back
    errors = loco_errors(rows, linear=False, factors_ok=False)
    assert (errors["basis"] == "no basis").all()
    text = format_validation(rows)
    assert "factor basis held back" in text and "coverage: 0 of 9 cells got a forecast, 9 no basis" in text
    assert f"{FACTORS} (held back) would miss by" in text


def test_factor_basis_is_kept_where_it_validates_and_held_back_where_nothing_validates_it():
    models = {"mlp": 1e-3, "dlinear": 1.5e-3, "transformer": 8e-3}
    methods = {"backprop": 1.0, "f3": 0.8, "forward_gradient": 5.0}
    rows = grid_rows({(m, k): a * b for m, a in models.items() for k, b in methods.items()})
    check = check_factors(rows)
    assert check.cells == 9 and check.error < 0.05 and not check.held_back
    factors, _ = basis_factors(rows)
    assert factors is not None and "factor basis used" in format_validation(rows)
    # three cells, none of which the others identify: the basis is unvalidated, so not used
    lone = grid_rows({("mlp", "backprop"): 1e-3, ("mlp", "f3"): 2e-3, ("dlinear", "f3"): 4e-3})
    assert check_factors(lone).cells == 0 and basis_factors(lone)[0] is None


def test_an_infinite_factor_max_error_says_the_basis_is_forced_not_a_percentage():
    # the Latin square misses by 10x: with no threshold the basis is used anyway, and the line says so
    check = check_factors(grid_rows(LATIN_SQUARE), math.inf)
    assert not check.held_back
    line = check.describe()
    assert "inf%" not in line and "used (no threshold: --factor-max-error inf)" in line


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_bad_factor_max_error_is_a_one_line_error(tmp_path, capsys, value):
    path = tmp_path / "capped.toml"
    path.write_text(CAMPAIGN)
    code = main(["campaign", "plan", str(path), "--results", str(tmp_path / "r"), "--estimate",
                 "--factor-max-error", value])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--factor-max-error" in err and "\n" not in err


def mixed_kind_rows() -> pd.DataFrame:
    """`history_rows` on one hardware class where the lr=1e-3 cells were metered (100 kJ per
    device-hour, a sensor) and the lr=3e-3 cells estimated (40 kJ per device-hour, codecarbon)."""
    rows = history_rows()
    measured = rows["method_params"] == json.dumps({"lr": 1e-3})
    rows["estimated"] = ~measured
    rows.loc[measured, "train_energy_j"] = 100_000 * rows.loc[measured, "train_dh"]
    return rows


def test_estimated_and_measured_joules_never_share_an_energy_fit():
    rows = mixed_kind_rows()
    measured, _ = choose_energy_model(rows, "measured")
    estimated, _ = choose_energy_model(rows, "estimated")
    assert measured.coef[0] == pytest.approx(100_000) and estimated.coef[0] == pytest.approx(40_000)
    assert "measured" in measured.describe() and "estimated" in estimated.describe()
    # each left-out cell's joules come from its own kind's rows (one shared fit would give ~70 kJ/dh)
    errors = loco_errors(rows, linear=False)
    assert pd.to_numeric(errors["err_j"]).max() < 0.01
    assert energy_kind(rows) == "measured" and energy_kind(rows[rows["estimated"]]) == "estimated"
    assert energy_kind(history_rows()) == "estimated"  # no kind column: an estimate, as the store's view says
    text = format_validation(rows)
    assert "measured energy" in text and "estimated energy" in text


def test_validation_says_how_contended_the_rows_times_were() -> None:
    from joulebench.cluster.estimate import conditions

    rows = pd.DataFrame({"train_s": [1.0, 2.0], "train_cpu_s": [0.9, 1.0], "host_load_1m": [1.0, 3.0],
                         "cpu_count": [2, 2]})
    assert conditions(rows) == ("machine load while the rows ran: median 2.00 (range 1.00–3.00, 2 of 2 rows) "
                                "on 2 cores; CPU seconds per training second: median 0.70 (0.50–0.90)")
    assert "not recorded" in conditions(pd.DataFrame({"train_s": [1.0]}))
