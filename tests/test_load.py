"""Probabilistic load forecasting (AutoPQ style): data, splits, metrics, cINN and harness runs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from joulebench.harness.params import SpecError
from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.tasks.load import data, metrics
from joulebench.tasks.load.models import (
    CINN,
    POINT,
    QuantileWidths,
    latent_neighbourhood,
    residual_scale,
)
from joulebench.tasks.load.task import LoadForecast
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
    row = _run(results, task_params={"prob": "gaussian"})
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
    point = _run(results, task_params={"center": "point", "cinn_of": "residual"})
    zero = _run(results, task_params={"center": "zero", "cinn_of": "residual"})
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
    variant = {"cinn_of": "residual", "center": "zero"}     # additive noise: width ∝ spread
    narrow = _run(results, task_params={**variant, "spread": 0.2})
    wide = _run(results, task_params={**variant, "spread": 3.0})
    tuned = _run(results, task_params={**variant, "spread": 0.0})
    assert tuned["status"] == "ok", tuned.get("traceback")
    assert narrow["metric_coverage80"] < wide["metric_coverage80"]
    assert narrow["metric_mae_point"] == wide["metric_mae_point"]   # training is the same
    assert 0.2 <= tuned["metric_spread"] <= 3.0 and wide["metric_spread"] == 3.0
    assert tuned["val_crps"] < wide["val_crps"]
    assert tuned["metric_sigma_factor"] == wide["metric_sigma_factor"]   # same Gaussian baseline
    assert tuned["metric_crps_gauss"] == wide["metric_crps_gauss"]


def _task(**params) -> tuple[LoadForecast, torch.nn.Module]:
    """The tiny task set up, with its model's cINN at random (not identity) weights."""
    spec = resolve(RunSpec(task="load", preset="tiny", task_params=params))
    task = LoadForecast(spec.task_params, "tiny", 0, torch.device("cpu"))
    task.setup()
    torch.manual_seed(0)
    model = task.build_model()
    for p in model.cinn.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return task, model


@pytest.mark.parametrize("noise", ["relative", "additive"])
def test_autopq_samples_around_the_point_forecasts_latent(noise: str) -> None:
    """AutoPQ: the flow models the target given the covariates only; sampling maps the point
    forecast into the latent, draws around that latent and inverts."""
    task, model = _task(latent_noise=noise)
    assert not model.cinn.with_point
    x = task.splits["val"].x[:50]
    with torch.no_grad():
        p = model.point(x)
        c = model.cinn.condition(x)
        z_p = model.cinn(p, c)[0]
        assert torch.allclose(model.cinn.inverse(z_p, c), p, atol=1e-4)
        eps = torch.randn(4000, *p.shape, generator=torch.Generator().manual_seed(1))
        sample = task.sampler(model, x, p, eps)
        assert torch.allclose(sample(0.0), p, atol=1e-4)         # spread 0: the point forecast
        z = latent_neighbourhood(z_p, eps, 0.3, noise == "relative")
        assert torch.allclose(z.mean(0), z_p, atol=0.05 * float(z_p.abs().max()) + 0.03)
        assert torch.allclose(model.cinn.inverse(z, c), sample(0.3), atol=1e-4)
        # the point forecast lies inside the samples' bulk, with as many above as below
        above = (sample(0.3) > p).float().mean(0)
        assert 0.3 < float(above.median()) < 0.7
    if noise == "relative":     # the authors' noise: the spread grows with the latent's size
        gap = (z - z_p).std(0)
        assert torch.allclose(gap, 0.3 * z_p.abs(), rtol=0.1, atol=1e-3)


def test_autopq_flow_is_trained_on_the_target_not_the_residual() -> None:
    task, model = _task()
    batch = {"x": task.splits["train"].x[:16], "y": task.splits["train"].y[:16]}
    mse = torch.nn.functional.mse_loss(model.point(batch["x"]), batch["y"])
    nll = model.cinn.nll(batch["y"], model.cinn.condition(batch["x"]))
    with torch.no_grad():
        assert float(task.loss(model, batch)) == pytest.approx(float(mse + nll), rel=1e-6)


def test_quantile_crps_and_conformal_by_hand() -> None:
    """Two windows, one hour, three levels: the quantile-score CRPS and the conformal quantiles
    written out by hand."""
    levels = (0.25, 0.5, 0.75)
    q = torch.tensor([[[1.0], [0.0]], [[2.0], [1.0]], [[3.0], [2.0]]])      # (L=3, N=2, H=1)
    y = torch.tensor([[2.5], [-1.0]])
    # window 1: ρ.25(1.5)=.375, ρ.5(.5)=.25, ρ.75(-.5)=.125; window 2: .75(1)=.75, .5(2)=1, .25(3)=.75
    by_hand = 2 * (0.375 + 0.25 + 0.125 + 0.75 + 1.0 + 0.75) / 6
    assert float(metrics.crps_quantiles(q, y, levels)) == pytest.approx(by_hand)
    residual_val = torch.tensor([[-2.0], [0.0], [2.0]])
    cq = metrics.conformal_quantiles(torch.tensor([[10.0], [20.0]]), residual_val, levels)
    assert cq[:, :, 0].tolist() == [[9.0, 19.0], [10.0, 20.0], [11.0, 21.0]]
    # on 19 levels the quantile score approaches the closed-form Gaussian CRPS (tails left out)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2000, 3, generator=g)
    lv = torch.tensor(metrics.CRPS_LEVELS)
    normal_q = (torch.sqrt(torch.tensor(2.0)) * torch.erfinv(2 * lv - 1))[:, None, None].expand(-1, 2000, 3)
    exact = metrics.crps_gaussian(torch.zeros(2000, 3), torch.ones(2000, 3), y)
    assert float(metrics.crps_quantiles(normal_q, y)) == pytest.approx(float(exact), rel=0.06)


def test_quantile_regression_never_crosses_and_centres_on_the_median() -> None:
    torch.manual_seed(0)
    head = QuantileWidths(n_feat=5, hidden=8, levels=metrics.CRPS_LEVELS)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=2.0)
    x, median = torch.randn(30, 5), torch.randn(30, 24)
    q = head(x, median)
    assert q.shape == (19, 30, 24) and torch.equal(q[metrics.CRPS_LEVELS.index(0.5)], median)
    assert bool((q.diff(dim=0) > 0).all())
    with pytest.raises(ValueError, match="0.5 in the middle"):
        QuantileWidths(5, 8, (0.1, 0.9))


def test_quantile_regression_and_baselines_run(results: Path) -> None:
    qr = _run(results, task_params={"prob": "quantile"})
    assert qr["status"] == "ok", qr.get("traceback")
    assert qr["model"] == "mlp+quantile" and qr["metric_crps"] == qr["metric_crps_q"]
    assert 0.5 < qr["metric_coverage80"] <= 1 and "metric_spread" not in qr or qr["metric_spread"] is None
    cinn = _run(results)
    assert cinn["model"] == "mlp+cinn"
    for row in (qr, cinn):
        assert 0 < row["metric_crps_q_conformal"] < row["metric_mae_point"]
        assert 0 < row["metric_coverage80_conformal"] <= 1
    assert cinn["metric_crps_q"] == pytest.approx(cinn["metric_crps"], rel=0.15)


def test_cinn_parameters_do_not_apply_to_quantile_regression() -> None:
    with pytest.raises(SpecError, match="spread"):
        resolve(RunSpec(task="load", preset="tiny", task_params={"prob": "quantile", "spread": 1.0}))


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_load_data_is_a_one_line_data_error(tmp_path: Path, results: Path, bad: str) -> None:
    """A NaN gap in the target is filled; a target with nothing to fill from, or inf anywhere,
    fails the run at set-up with one line naming the file and column (nothing stored as ok)."""
    frame = data.make_load(600, seed=0)
    if bad == "nan":
        frame["target"] = float("nan")
    else:
        frame.loc[10, "temperature"] = float("inf")
    csv = tmp_path / "load.csv"
    frame.to_csv(csv, index=False)
    row = _run(results, task_params={"csv": str(csv), "target": "target"}, budget={"steps": 2})
    assert row["status"] == "failed"
    assert "data error" in row["error"] and "\n" not in row["error"].strip(), row["error"]
    assert str(csv) in row["error"] and ("'target'" if bad == "nan" else "'temperature'") in row["error"]
    assert Store(results).stored_keys() == set()
