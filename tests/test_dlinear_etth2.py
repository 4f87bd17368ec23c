"""The published check: DLinear on the real ETTh2 (input 336, horizon 96) lands near MSE 0.289."""

from __future__ import annotations

from pathlib import Path

import pytest

from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from tests.conftest import shared_file


@pytest.mark.slow
def test_dlinear_on_etth2_is_within_ten_percent_of_the_paper(results: Path) -> None:
    path = shared_file("ETTh2.csv")
    spec = resolve(RunSpec(task="ltsf", preset="full", eval_every=10**6,
                           task_params={"dataset": "ETTh2", "data_dir": str(path.parent)},
                           method_params={"lr": 0.05}))  # DLinear's published ETTh2 script
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]
    assert row["metric_mse"] == pytest.approx(0.289, rel=0.10)
    assert row["metric_mae"] == pytest.approx(0.353, rel=0.10)
