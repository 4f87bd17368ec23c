"""Item 8 and 9 of issue 16: non-finite data and metrics fail runs; bad input is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from joulebench.harness.cli import main
from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.tasks.ltsf.data import make_ett_like
from tests.test_store_attempts import row


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture
def stored(results: Path) -> Path:
    Store(results).write_run(row("k"))
    return results


@pytest.mark.parametrize("argv, message", [
    (["--where", "seed=abc"], "'abc' is not a bigint"),
    (["--where", "finished_at>yesterday"], "'yesterday' is not a timestamp"),
    (["--limit", "-1"], "--limit must be 0"),
])
def test_bad_results_arguments_are_one_line_errors(stored: Path, capsys, argv: list[str], message: str) -> None:
    assert message in one_line_error(capsys, ["results", "--results", str(stored), *argv])


def test_typed_filters_still_filter(stored: Path, capsys) -> None:
    assert main(["results", "--results", str(stored), "--where", "seed=0", "--where",
                 "finished_at>2025-12-31", "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("\n") == 2  # header and the one run


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not text"),
    (b'name = "../../x\\necho INJECTED"\n[[grid]]\ntask = "ltsf"\nmethods = ["backprop"]\n', "name"),
    (b'name = "ok"\n[defaults]\nseeds = [9223372036854775808]\n[[grid]]\ntask = "ltsf"\nmethods = ["backprop"]\n',
     "seeds"),
])
def test_bad_campaign_files_are_one_line_errors(tmp_path: Path, results: Path, capsys, content: bytes,
                                                message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    assert message in one_line_error(capsys, ["campaign", "plan", str(path), "--results", str(results)])
    assert not (tmp_path.parent / "x").exists()


def test_compact_that_cannot_write_its_part_is_one_line_and_keeps_the_files(stored: Path, capsys) -> None:
    (stored / "runs" / "compacted").write_text("a file where the parts folder belongs")
    assert "cannot write" in one_line_error(capsys, ["compact", "--results", str(stored)])
    assert Store(stored).stored_keys() == {"k"}


def ett_csv(folder: Path, nan_at: float | None = None, zero_target_after: float | None = None) -> Path:
    frame = make_ett_like(14_400)
    if nan_at is not None:
        frame.loc[int(len(frame) * nan_at), "OT"] = np.nan
    if zero_target_after is not None:
        frame.loc[int(len(frame) * zero_target_after):, "OT"] = 0.0
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "ETTh2.csv", index=False)
    return folder


def run_on(results: Path, data_dir: Path) -> dict:
    spec = resolve(RunSpec(task="ltsf", preset="tiny", budget={"steps": 2},
                           task_params={"dataset": "ETTh2", "data_dir": str(data_dir)}))
    return Runner(Store(results)).run(spec)


def test_nan_in_the_test_split_is_a_data_error_at_setup_not_an_ok_run(tmp_path: Path, results: Path) -> None:
    got = run_on(results, ett_csv(tmp_path / "data", nan_at=0.95))
    assert got["status"] == "failed" and "data error" in got["error"] and "NaN" in got["error"]
    assert Store(results).stored_keys() == set()


def test_a_nan_metric_fails_the_run_and_is_never_cached(tmp_path: Path, results: Path) -> None:
    """A target of zeros after training leaves MAPE undefined (NaN): a failed run, not ``ok``."""
    got = run_on(results, ett_csv(tmp_path / "data", zero_target_after=0.6))
    assert got["status"] == "failed", got
    assert "metric mape is NaN on split" in got["error"] and "(data?)" in got["error"]
    assert Store(results).stored_keys() == set()


@pytest.mark.parametrize("source, message", [
    ("import sys\nsys.exit(0)\n", "sys.exit(0)"),
    ("def broken(:\n", "did not load"),
])
def test_a_plugin_that_exits_or_does_not_parse_is_one_line_error(tmp_path: Path, results: Path, capsys,
                                                                 source: str, message: str) -> None:
    plugin = tmp_path / "plugin_bad.py"
    plugin.write_text(source)
    err = one_line_error(capsys, ["run", "--task", "ltsf", "--plugin", str(plugin), "--results", str(results)])
    assert message in err
    assert not (results / "runs").exists()
