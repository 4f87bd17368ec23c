"""The AutoPQ claim on real data: on Load-BW the cINN's quantiles beat a Gaussian around the same
point forecast, both widths chosen by the same validation rule and scored on the same draws."""

from __future__ import annotations

from pathlib import Path

import pytest

from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from tests.conftest import shared_file


@pytest.mark.slow
def test_cinn_crps_beats_the_gaussian_on_load_bw(results: Path) -> None:
    path = shared_file("Load-BW.csv")
    spec = resolve(RunSpec(task="load", preset="full", task_params={"csv": str(path)}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]
    assert row["metric_crps"] < row["metric_crps_gauss"]
    assert row["metric_crps"] < row["metric_crps_gauss_mle"]
    assert row["metric_pinball"] < row["metric_pinball_gauss"]
