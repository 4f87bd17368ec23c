"""The leaderboard: table contents and chart data against known rows (Streamlit AppTest)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from joulebench.harness.cli import build_parser
from joulebench.harness.store import Store
from joulebench.leaderboard.cli import streamlit_command
from joulebench.leaderboard.queries import Board, Filters

APP = str(Path(__file__).resolve().parents[1] / "leaderboard" / "app.py")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BACKPROP = json.dumps({"clip_norm": 0.0, "lr": 0.001, "momentum": 0.9, "optimizer": "adam",
                       "schedule": "constant", "warmup_steps": 0, "weight_decay": 0.0}, sort_keys=True)


def row(key: str, method: str, seed: int, mse: float | None, joules: float | None, estimated: bool = True,
        status: str = "ok", params: str = BACKPROP, **extra) -> dict:
    return {"run_key": key, "task": "ltsf", "preset": "tiny", "method": method, "model": "dlinear",
            "seed": seed, "status": status, "primary_metric": "mse", "primary_value": mse,
            "higher_is_better": False, "method_params": params, "train_energy_j": joules,
            "train_s": None if joules is None else joules / 10, "samples": 100, "energy_estimated": estimated,
            "energy_source": "estimate:codecarbon" if estimated else "rapl+nvml", "cpu_model": "Xeon",
            "time_to_target_s": None if joules is None else joules / 20,
            "spec_json": json.dumps({"task": "ltsf", "seed": seed}),
            "started_at": T0 + timedelta(minutes=seed), "finished_at": T0 + timedelta(minutes=seed, seconds=9),
            **extra}


def curve(key: str, seed: int) -> list[dict]:
    # "mae" comes first in the JSON: the curves must still plot the primary metric (mse)
    return [{"run_key": key, "task": "ltsf", "method": "backprop", "step": step, "split": "val",
             "run_started_at": T0 + timedelta(minutes=seed), "train_s": step / 10.0, "train_energy_j": step * 1.0,
             "metrics_json": json.dumps({"mae": 9.0, "mse": 1.0 / step})} for step in (1, 2, 3)]


@pytest.fixture
def store(results: Path) -> Path:
    s = Store(results)
    for seed, (mse, joules) in enumerate([(0.3, 10.0), (0.4, 20.0), (0.5, 30.0)]):
        s.write_run(row(f"bp{seed}", "backprop", seed, mse, joules, world_size=2 ** seed, local_batch=32,
                        global_batch=32 * 2 ** seed, device_hours=0.01 * (seed + 1), gradient_updates=10),
                    curve(f"bp{seed}", seed))
    for seed, (mse, joules) in enumerate([(0.2, 100.0), (0.25, 200.0), (0.35, 300.0)]):
        s.write_run(row(f"fx{seed}", "fancy", seed, mse, joules, params=json.dumps({"k": 4})))
    # measured on a GPU: ranked in rows of their own, against the measured baseline
    s.write_run(row("bpm", "backprop", 0, 0.45, 5.0, estimated=False, gpu_model="GPU X"))
    for seed, (mse, joules) in enumerate([(0.22, 50.0), (0.24, 70.0)]):
        s.write_run(row(f"fxm{seed}", "fancy", seed, mse, joules, estimated=False, gpu_model="GPU X",
                        params=json.dumps({"k": 4})))
    s.write_run(row("bad", "fancy", 7, None, None, status="failed", error="RuntimeError: boom",
                    traceback="Traceback (most recent call last): ..."))
    s.write_run({**row("pet0", "backprop", 0, 0.8, 3.0), "task": "pet", "preset": "small",
                 "primary_metric": "f1", "higher_is_better": True})
    return results


@pytest.fixture
def app(monkeypatch):
    def start(root: Path) -> AppTest:
        monkeypatch.setenv("JOULEBENCH_RESULTS", str(root))
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert not at.exception, at.exception
        return at
    return start


def chart_data(element) -> pd.DataFrame:
    return pa.ipc.open_stream(element.proto.datasets[0].data.data).read_all().to_pandas()


def charts(at: AppTest, *words: str) -> list:
    return [c for c in at.get("vega_lite_chart") if all(w in c.proto.spec for w in words)]


def test_empty_store_explains_how_to_produce_runs(results: Path, app) -> None:
    at = app(results)
    assert "No runs stored" in at.info[0].value and "joulebench run" in at.info[0].value
    assert not at.dataframe


def test_ranking_medians_spread_and_ratio_to_backprop_per_energy_kind(store: Path, app) -> None:
    at = app(store)
    table = at.dataframe[0].value
    assert list(zip(table["method"], table["estimated"])) == [
        ("fancy", False), ("fancy", True), ("backprop", True), ("backprop", False)]  # lower MSE first
    rows = {(m, e): r for m, e, r in zip(table["method"], table["estimated"], table.to_dict("records"))}
    fancy, fancy_measured = rows["fancy", True], rows["fancy", False]
    assert fancy["mse (median)"] == pytest.approx(0.25) and fancy["mse IQR"] == pytest.approx(0.3 - 0.225)
    assert fancy["seeds"] == 3 and fancy["train_j"] == pytest.approx(200.0)
    assert fancy["energy_vs_backprop"] == pytest.approx(10.0)  # 200 J / 20 J, both estimated
    assert fancy["time_to_target_vs_backprop"] == pytest.approx(10.0)
    assert fancy_measured["energy_vs_backprop"] == pytest.approx(60.0 / 5.0)  # against the measured 5 J
    assert rows["backprop", True]["energy_vs_backprop"] == 1.0
    assert fancy["key_params"] == "k=4" and rows["backprop", True]["key_params"] == ""
    assert fancy["energy_source"] == "estimate:codecarbon" and fancy_measured["energy_source"] == "rapl+nvml"
    assert "estimate" in at.warning[0].value  # estimates are marked, never mixed silently
    assert at.get("download_button")[0].proto.label == "Download CSV"


def test_csv_export_is_the_visible_table(store: Path) -> None:
    board = Board(store)
    table = board.ranking(Filters(task="ltsf", preset="tiny"))
    back = pd.read_csv(io.StringIO(table.to_csv(index=False)))
    assert list(back["method"]) == list(table["method"]) and len(back) == 4


def test_pareto_chart_data_marks_the_front_within_each_energy_kind(store: Path, app) -> None:
    at = app(store)
    (chart,) = charts(at, "Pareto front")
    assert json.loads(chart.proto.spec)["layer"][0]["encoding"]["x"]["scale"]["type"] == "log"
    data = chart_data(chart).set_index("run_key")
    # estimated: 0.3 at 10 J, then 0.2 at 100 J; measured: 0.45 at 5 J, then 0.22 at 50 J
    assert set(data.index[data["pareto"]]) == {"bp0", "fx0", "bpm", "fxm0"}
    assert len(data) == 9  # the failed run has no point; the pet run is another task


def test_filters_hide_estimates_methods_hardware(store: Path, app) -> None:
    at = app(store)
    at.sidebar.toggle(key="hide_estimates").set_value(True).run()
    table = at.dataframe[0].value
    assert list(table["method"]) == ["fancy", "backprop"] and not table["estimated"].any()
    assert not at.warning
    at.sidebar.toggle(key="hide_estimates").set_value(False).run()
    at.sidebar.multiselect(key="methods").set_value(["fancy"]).run()
    table = at.dataframe[0].value
    assert set(table["method"]) == {"fancy"}
    # the baseline is backprop of the same task and preset, whichever methods are shown
    assert sorted(table["energy_vs_backprop"]) == pytest.approx([10.0, 12.0])
    at.sidebar.multiselect(key="methods").set_value([]).run()
    assert at.sidebar.multiselect(key="hw").options == ["GPU X", "Xeon"]
    at.sidebar.multiselect(key="hw").set_value(["GPU X"]).run()
    assert set(at.dataframe[0].value["runs"]) == {1, 2}


def test_presets_follow_the_task(store: Path, app) -> None:
    at = app(store)
    assert at.sidebar.selectbox(key="task").options == ["ltsf", "pet"]
    assert at.sidebar.selectbox(key="preset").options == ["tiny"]
    at.sidebar.selectbox(key="task").set_value("pet").run()
    assert at.sidebar.selectbox(key="preset").value == "small"
    table = at.dataframe[0].value
    assert list(table["metric"]) == ["f1"] and table["f1 (median)"].iloc[0] == pytest.approx(0.8)


def test_learning_curves_plot_the_primary_metric(store: Path, app) -> None:
    at = app(store)
    by_energy, by_time = charts(at, "validation mse against training energy"), charts(at, "against training time")
    data = chart_data(by_energy[0])
    assert sorted(data["value"].round(3).unique()) == [0.333, 0.5, 1.0]  # mse = 1/step, never mae = 9
    assert sorted(data["run_key"].unique()) == ["bp0", "bp1", "bp2"]
    assert sorted(chart_data(by_time[0])["train_s"].unique()) == pytest.approx([0.1, 0.2, 0.3])


def test_scaling_view_colours_by_devices_and_batch(store: Path, app) -> None:
    at = app(store)
    data = chart_data(charts(at, "energy against device-hours")[0]).set_index("run_key")
    assert data.loc["bp2", "world_size"] == 4 and data.loc["bp2", "global_batch"] == 128
    hours = 2 * 2.0 / 3600  # the training window: world_size x train_s, as train_energy_j
    assert data.loc["bp1", "samples_per_device_hour"] == pytest.approx(100 / hours)
    assert data.loc["bp1", "updates_per_device_hour"] == pytest.approx(10 / hours)
    assert data.loc["bp1", "train_device_hours"] == pytest.approx(hours)
    assert any("R² =" in m.value for m in at.markdown) and any("by construction" in w.value for w in at.warning)
    assert charts(at, "samples and gradient updates per device-hour")


def test_plot_export_renders_png_and_svg(store: Path, app) -> None:
    at = app(store)
    at.checkbox(key="export-ltsf-tiny-pareto").check().run()
    labels = [b.proto.label for b in at.get("download_button")]
    assert "PNG" in labels and "SVG" in labels


def test_run_detail_shows_error_phases_and_curve(store: Path, app) -> None:
    at = app(store)
    at.selectbox(key="run_key").set_value("bad").run()
    assert "RuntimeError: boom" in at.error[0].value and "Traceback" in at.code[0].value
    at.selectbox(key="run_key").set_value("bp1").run()
    phases = next(d.value for d in at.dataframe if "phase" in d.value.columns)
    assert phases.set_index("phase").loc["train", "joules"] == pytest.approx(20.0)
    assert sorted(chart_data(charts(at, "step", "train_s")[-1])["value"].round(3)) == [0.333, 0.5, 1.0]


def test_queries_bind_filters_instead_of_pasting_them(store: Path) -> None:
    board = Board(store)
    assert board.ranking(Filters(task="ltsf' OR '1'='1", preset="tiny")).empty
    assert len(board.ranking(Filters(task="ltsf", preset="tiny", statuses=()))) == 5  # + the failed run
    with pytest.raises(ValueError):
        board.distinct("task; DROP TABLE board_runs")


def test_new_runs_appear_after_refresh(store: Path) -> None:
    board = Board(store)
    before = board.count()
    Store(store).write_run(row("late", "fancy", 9, 0.1, 1.0))
    board.refresh(max_age_s=3600)
    assert board.count() == before  # still the snapshot
    board.refresh(max_age_s=0)
    assert board.count() == before + 1


def test_compacted_and_per_run_files_read_alike(store: Path) -> None:
    before = Board(store).ranking(Filters(task="ltsf", preset="tiny"))
    Store(store).compact()
    Store(store).write_run(row("late", "fancy", 9, 0.1, 1.0, params=json.dumps({"k": 4})))
    after = Board(store).ranking(Filters(task="ltsf", preset="tiny"))
    assert after.set_index(["method", "estimated"]).loc[("fancy", True), "runs"] == 4
    assert before.set_index(["method", "estimated"]).loc[("fancy", True), "runs"] == 3


def test_real_tiny_runs(results: Path, app) -> None:
    """Two real runs of the harness: the app reads what the runner wrote."""
    from joulebench.harness.runner import Runner
    from joulebench.harness.spec import RunSpec, resolve

    runner = Runner(Store(results))
    rows = [runner.run(resolve(RunSpec(task="ltsf", preset="tiny", seed=seed, budget={"steps": 40},
                                       eval_every=20))) for seed in (0, 1)]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    at = app(results)
    table = at.dataframe[0].value
    assert list(table["method"]) == ["backprop"] and table["seeds"].iloc[0] == 2
    assert table["mse (median)"].iloc[0] == pytest.approx(sorted(r["primary_value"] for r in rows)[0] / 2
                                                          + sorted(r["primary_value"] for r in rows)[1] / 2)
    data = chart_data(charts(at, "validation mse against training energy")[0])
    assert set(data["run_key"]) == {r["run_key"] for r in rows} and data["value"].notna().all()


def test_cli_registers_the_leaderboard_command(tmp_path: Path) -> None:
    args = build_parser().parse_args(["leaderboard", "--results", str(tmp_path), "--port", "8600"])
    assert args.command == "leaderboard" and args.port == 8600 and args.address == "127.0.0.1"
    cmd = streamlit_command(tmp_path, 8600, "127.0.0.1")
    flags = dict(zip(cmd[cmd.index("run") + 2::2], cmd[cmd.index("run") + 3::2]))
    assert flags["--browser.gatherUsageStats"] == "false" and flags["--server.headless"] == "true"
    assert flags["--server.fileWatcherType"] == "none" and flags["--server.address"] == "127.0.0.1"


def test_leaderboard_passes_plugins_to_the_app(tmp_path: Path) -> None:
    plugin = tmp_path / "my_method.py"
    cmd = streamlit_command(tmp_path, 8600, "127.0.0.1", [str(plugin)])
    app_args = cmd[cmd.index("--") + 1:]
    assert app_args == ["--results", str(tmp_path), "--plugin", str(plugin.resolve())]
