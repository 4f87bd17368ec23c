"""The one-line run summary names what differs from the defaults (it used to read the same for
five models)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.summary import format_summary, key_params


def summary_of(**spec) -> str:
    resolved = resolve(RunSpec(task="ltsf", preset="tiny", **spec))
    row = {**resolved.model_dump(), "status": "ok", "primary_metric": "mse", "primary_value": 0.3776,
           "train_s": 1.5, "train_energy_j": 12.0, "energy_source": "estimate:codecarbon", "run_key": "k"}
    return format_summary(row)


def test_defaults_add_nothing_and_each_model_reads_differently() -> None:
    assert summary_of().startswith("ltsf/backprop tiny seed=0 [ok] | mse=0.3776")
    lines = {model: summary_of(task_params={"model": model}) for model in ("patchtst", "mlp")}
    assert lines["patchtst"].startswith("ltsf/backprop tiny model=patchtst seed=0 [ok]")
    assert lines["mlp"].startswith("ltsf/backprop tiny model=mlp seed=0 [ok]")


def test_method_and_task_parameters_both_named_against_the_preset() -> None:
    line = summary_of(method_params={"lr": 0.01}, task_params={"seq_len": 96})
    assert "lr=0.01, seq_len=96 seed=0" in line
    # the leaderboard shows the model in a column of its own
    assert key_params("ltsf", "tiny", "backprop", '{"lr": 0.001}', '{"model": "mlp"}', with_model=False) == ""


@pytest.mark.slow
def test_cli_run_prints_the_differing_model(results: Path) -> None:
    """The real command: the line printed after a run names the model it trained."""
    out = subprocess.run([sys.executable, "-m", "joulebench.harness.cli", "run", "--task", "ltsf",
                          "-T", "model=mlp", "--steps", "3", "--results", str(results)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ltsf/backprop tiny model=mlp seed=0 [ok] | mse=" in out.stdout
