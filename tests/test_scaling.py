"""The energy-scaling fits: one window for energy and device-hours, R² and residuals, and the
regression of J per device-hour on samples and updates per device-hour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from joulebench.cluster.campaign import Campaign, resolve_runs
from joulebench.cluster.scaling import fit_rates, load_rows, report_for, window_frame
from joulebench.harness.meters import default_meter
from joulebench.harness.params import SpecError
from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store

CAMPAIGN = Path(__file__).resolve().parents[1] / "examples" / "campaigns" / "scaling.toml"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scaling") / "results"
    runner = Runner(Store(root), default_meter("cpu"))  # codecarbon: estimated energy
    for batch, steps in ((8, 6), (16, 10), (32, 4), (16, 14)):
        spec = resolve(RunSpec(task="ltsf", preset="tiny", budget={"steps": steps},
                               task_params={"model": "dlinear", "batch_size": batch}))
        assert runner.run(spec)["status"] == "ok"
    return root


def test_energy_and_device_hours_come_from_the_same_window(store: Path) -> None:
    rows = load_rows(store)
    train, total = window_frame(rows, "train"), window_frame(rows, "total")
    assert np.allclose(train["device_hours"], rows["world_size"] * rows["train_s"] / 3600)
    assert np.allclose(train["energy_j"], rows["train_energy_j"])
    assert np.allclose(total["device_hours"], rows["world_size"] * rows["wall_s"] / 3600)
    assert np.allclose(total["energy_j"], rows["total_energy_j"])
    assert (rows["train_s"] < rows["wall_s"]).all()  # so the windows really differ


def test_report_has_both_fits_with_r2_residuals_and_the_estimate_caveat(store: Path) -> None:
    report = report_for(store, task="ltsf")
    fit = report.energy["train"]
    frame = window_frame(load_rows(store), "train")
    predicted = fit.slope_j_per_device_hour * frame["device_hours"] + fit.intercept_j
    assert np.allclose(sorted(fit.residuals_j), sorted(frame["energy_j"] - predicted))
    assert fit.n == 4 and set(report.energy) == {"train", "total"}
    assert set(report.rates) == {"train", "total"}
    text = report.describe()
    assert "R² =" in text and "samples/device-hour" in text
    assert report.estimated and "by construction" in text  # codecarbon here: power × time


def test_rate_regression_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(0)
    hours = rng.uniform(0.5, 2.0, 8)
    samples, updates = rng.uniform(1e3, 1e5, 8) * hours, rng.uniform(10, 500, 8) * hours
    energy = (0.02 * samples / hours + 3.0 * updates / hours + 200.0) * hours
    frame = pd.DataFrame({"device_hours": hours, "energy_j": energy, "samples": samples,
                          "gradient_updates": updates})
    frame["j_per_device_hour"] = frame["energy_j"] / frame["device_hours"]
    frame["samples_per_device_hour"] = frame["samples"] / hours
    frame["updates_per_device_hour"] = frame["gradient_updates"] / hours
    fit = fit_rates(frame, "train")
    assert fit.j_per_sample == pytest.approx(0.02, rel=1e-6)
    assert fit.j_per_update == pytest.approx(3.0, rel=1e-6)
    assert fit.intercept_j_per_device_hour == pytest.approx(200.0, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0)
    with pytest.raises(SpecError, match="at least 4"):
        fit_rates(frame.head(3), "train")


def test_campaign_varies_devices_global_and_local_batch_independently() -> None:
    runs = [spec for spec, _ in resolve_runs(Campaign.load(CAMPAIGN))]
    cells = {(s.world_size, s.task_params["batch_size"] * s.world_size, s.task_params["batch_size"])
             for s in runs}
    by_global = {}
    for ws, global_batch, _ in cells:
        by_global.setdefault(global_batch, set()).add(ws)
    assert {g for g, sizes in by_global.items() if sizes == {1, 2}} == {16, 32, 64}
    assert len({local for *_, local in cells}) >= 3 and len(runs) == 3 * len(cells)
