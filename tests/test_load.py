"""Probabilistic load forecasting (AutoPQ style): data, splits, metrics, cINN and harness runs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.tasks.load import data, metrics
from joulebench.tasks.load.models import CINN, POINT, residual_scale
from tests.conftest import shared_file


def _run(results: Path, **spec) -> dict:
    return Runner(Store(results)).run(resolve(RunSpec(task="load", preset="tiny", **spec)))


def test_autopq_split() -> None:
    r = data.split_ranges(1000)
    assert r == {"train": (0, 560), "val": (560, 800), "test": (800, 1000)}


def test_generator_is_load_shaped() -> None:
    frame = data.make_load(24 * 7 * 20, seed=1)
    t = pd.DatetimeIndex(frame["time"])
    y = frame["target"]
    workday = y[(t.day_of_week < 5)].mean()
    sunday = y[(t.day_of_week == 6)].mean()
    assert sunday < 0.95 * workday
    assert y[t.hour == 12].mean() > 1.1 * y[t.hour == 3].mean()
    # 2018-01-01 (a Monday) is a public holiday in DE: lower than the next Monday
    assert y[t.date == pd.Timestamp("2018-01-01").date()].mean() < y[t.date == pd.Timestamp("2018-01-08").date()].mean()
    # temperature effect: winter (cold) load above the spring load at equal weekday
    assert frame["temperature"].std() > 2


def test_windows_and_scaling() -> None:
    frame = data.make_load(600, seed=0)
    w = data.build_windows(frame, n_lags=48, country="DE", exog="temperature")
    n = 600 - 48 - 24 + 1
    assert w["x"].shape == (n, 48 + 4 + 2 + 24) and w["y"].shape == (n, 24)
    ys = (frame["target"].to_numpy() - w["mean"]) / w["std"]
    assert w["y"][5, 0] == pytest.approx(ys[5 + 48], rel=1e-5)
    assert w["x"][5, 47] == pytest.approx(ys[5 + 47], rel=1e-5)


def test_missing_csv_says_what_to_put_where(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="time.*load_power_statistics"):
        data.read_csv(tmp_path / "nope.csv", "time", "load_power_statistics")


def test_metrics_agree() -> None:
    g = torch.Generator().manual_seed(0)
    mu, sigma = torch.zeros(50, 4), torch.full((50, 4), 2.0)
    y = torch.randn(50, 4, generator=g) * 2
    samples = mu[None] + sigma[None] * torch.randn(4000, 50, 4, generator=g)
    exact = metrics.crps_gaussian(mu, sigma, y)
    assert float(metrics.crps_samples(samples, y)) == pytest.approx(float(exact), rel=0.03)
    # a point mass: CRPS is the absolute error
    point = torch.full((2, 50, 4), 1.0)
    assert float(metrics.crps_samples(point, y)) == pytest.approx(float((y - 1).abs().mean()), rel=1e-5)
    # pinball at the true quantiles of a wide ensemble is below that of shifted quantiles
    q = torch.quantile(samples, torch.tensor(metrics.QUANTILES), dim=0)
    assert metrics.pinball(q, y) < metrics.pinball(q + 2, y)
    cov = metrics.summary(q, y, exact)["coverage80"]
    assert 0.6 < cov < 0.95


def test_cinn_is_invertible_and_logdet_is_exact() -> None:
    torch.manual_seed(0)
    net = CINN(n_feat=5, blocks=3, hidden=16, scale=torch.linspace(0.5, 2, 24)).double()
    for p in net.parameters():                  # leave the zero init, so the test is not trivial
        torch.nn.init.normal_(p, std=0.3)
    x, point, y = (torch.randn(3, n, dtype=torch.float64) for n in (5, 24, 24))
    c = net.condition(x, point)
    z, logdet = net(y, c)
    assert torch.allclose(net.inverse(z, c), y, atol=1e-9)
    jac = torch.autograd.functional.jacobian(lambda v: net(v[None], c[:1])[0][0], y[0])
    assert float(logdet[0].detach()) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), abs=1e-8)


@pytest.mark.parametrize("model", sorted(POINT))
def test_tiny_runs_every_point_model(results: Path, model: str) -> None:
    row = _run(results, task_params={"model": model})
    assert row["status"] == "ok", row.get("traceback")
    assert row["model"] == f"{model}+cinn" and row["gradient_updates"] == 60
    for k in ("crps", "crps_gauss", "crps_gauss_mle", "pinball", "mae_median", "coverage80"):
        assert math.isfinite(row[f"metric_{k}"])
    assert row["metric_crps"] < row["metric_mae_point"]       # a distribution beats its point


def test_without_cinn_the_gaussian_is_the_forecast(results: Path) -> None:
    row = _run(results, task_params={"cinn": False})
    assert row["status"] == "ok", row.get("traceback")
    assert row["metric_crps"] == row["metric_crps_gauss"]


def test_load_bw_reads_and_trains(results: Path) -> None:
    path = shared_file("Load-BW.csv")
    frame = data.read_csv(path, "time", "load_power_statistics")
    assert len(frame) == 8760 and {"load_transparency", "price_day_ahead"} <= set(frame.columns)
    row = _run(results, task_params={"csv": str(path), "n_samples": 20},
               budget={"steps": 40})
    assert row["status"] == "ok", row.get("traceback")
    assert 0 < row["metric_crps"] < 20000          # MW-scale load around 40,000


def test_exog_columns_must_exist() -> None:
    frame = data.make_load(600, seed=0)
    with pytest.raises(ValueError, match="not in the data"):
        data.build_windows(frame, n_lags=48, country="DE", exog="price_day_ahead")


def test_zero_centre_samples_the_cinn_distribution(results: Path) -> None:
    point = _run(results, task_params={"center": "point"})
    zero = _run(results, task_params={"center": "zero"})
    assert zero["status"] == "ok", zero.get("traceback")
    assert zero["metric_mae_point"] == point["metric_mae_point"]
    assert zero["metric_crps"] != point["metric_crps"]


def test_flow_takes_many_draws_per_window_at_once() -> None:
    """Sampling pushes (S, N, H) through with one condition row per window: same as one by one."""
    torch.manual_seed(1)
    net = CINN(n_feat=5, blocks=2, hidden=16, scale=0.3).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, point, z = (torch.randn(*n, dtype=torch.float64) for n in ((4, 5), (4, 24), (3, 4, 24)))
    c = net.condition(x, point)
    together = net.inverse(z, c)
    alone = torch.stack([net.inverse(z[k], c) for k in range(3)])
    assert torch.allclose(together, alone, atol=1e-9)
    zz, logdet = net(together, c)
    assert torch.allclose(zz, z, atol=1e-9) and logdet.shape == (3, 4)


def test_residual_scale_is_the_linear_residual() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 6, generator=g)
    y = x @ torch.randn(6, 24, generator=g) + 0.3 * torch.randn(4000, 24, generator=g)
    assert torch.allclose(residual_scale(x, y), torch.full((24,), 0.3), rtol=0.06)


def test_width_is_chosen_at_the_validation_optimum() -> None:
    """A forecaster of the right shape: the rule recovers its true width in few evaluations."""
    g = torch.Generator().manual_seed(0)
    y = 1.7 * torch.randn(400, 24, generator=g)
    noise = torch.randn(200, 400, 24, generator=g)
    widths: list[float] = []

    def sample(w: float) -> torch.Tensor:
        widths.append(w)
        return w * noise
    chosen = metrics.select_on_validation(sample, y, evals=9)
    assert chosen == pytest.approx(1.7, rel=0.06) and len(widths) == 9
    assert 0.2 <= min(widths) and max(widths) <= 3.0


def test_spread_widens_and_is_tuned_on_validation(results: Path) -> None:
    narrow = _run(results, task_params={"spread": 0.2})
    wide = _run(results, task_params={"spread": 3.0})
    tuned = _run(results, task_params={"spread": 0.0})
    assert tuned["status"] == "ok", tuned.get("traceback")
    assert narrow["metric_coverage80"] < wide["metric_coverage80"]
    assert narrow["metric_mae_point"] == wide["metric_mae_point"]   # training is the same
    assert 0.2 <= tuned["metric_spread"] <= 3.0 and wide["metric_spread"] == 3.0
    assert tuned["val_crps"] < wide["val_crps"]
    assert tuned["metric_sigma_factor"] == wide["metric_sigma_factor"]   # same Gaussian baseline
    assert tuned["metric_crps_gauss"] == wide["metric_crps_gauss"]
