"""The leaderboard: table contents and chart data against known rows (Streamlit AppTest)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from joulebench.harness.cli import build_parser
from joulebench.harness.store import Store
from joulebench.leaderboard.cli import streamlit_command
from joulebench.leaderboard.queries import Board, Filters
from joulebench.leaderboard.units import sig3

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
    def start(root: Path, **address: str) -> AppTest:
        """The app as a browser opens it at ``?k=v&...`` (no address: the overview)."""
        monkeypatch.setenv("JOULEBENCH_RESULTS", str(root))
        at = AppTest.from_file(APP, default_timeout=60)
        for key, value in address.items():
            at.query_params[key] = value
        at.run()
        assert not at.exception, at.exception
        return at
    return start


def chart_data(element) -> pd.DataFrame:
    return pa.ipc.open_stream(element.proto.datasets[0].data.data).read_all().to_pandas()


def charts(at: AppTest, *words: str) -> list:
    return [c for c in at.get("vega_lite_chart") if all(w in c.proto.spec for w in words)]


class TableText(HTMLParser):
    """The header and cell texts of the page's HTML table with ``data-testid=test_id``."""

    def __init__(self, test_id: str) -> None:
        super().__init__()
        self.test_id, self.inside, self.cell = test_id, False, None
        self.headers: list[str] = []
        self.rows: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.inside = dict(attrs).get("data-testid") == self.test_id
        elif self.inside and tag in ("td", "th"):
            self.cell = ""
        elif self.inside and tag == "tr":
            self.rows.append([])

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            (self.headers if tag == "th" else self.rows[-1]).append(self.cell)
            self.cell = None


def html_table(at: AppTest, test_id: str) -> pd.DataFrame:
    for element in at.get("html"):
        parser = TableText(test_id)
        parser.feed(element.proto.body)
        if parser.headers:
            return pd.DataFrame([r for r in parser.rows if r], columns=parser.headers)
    raise AssertionError(f"no table {test_id!r} on the page")


def test_empty_store_explains_how_to_produce_runs(results: Path, app) -> None:
    at = app(results)
    assert "No runs stored" in at.info[0].value and "joulebench run" in at.info[0].value
    assert not at.get("html")


def test_ranking_medians_spread_and_ratio_to_backprop_per_energy_kind(store: Path) -> None:
    table = Board(store).ranking(Filters(task="ltsf", preset="tiny"))
    assert list(zip(table["method"], table["estimated"])) == [
        ("fancy", False), ("fancy", True), ("backprop", True), ("backprop", False)]  # lower MSE first
    rows = {(m, e): r for m, e, r in zip(table["method"], table["estimated"], table.to_dict("records"))}
    fancy, fancy_measured = rows["fancy", True], rows["fancy", False]
    assert fancy["quality"] == pytest.approx(0.25) and fancy["spread"] == pytest.approx(0.3 - 0.225)
    assert fancy["seeds"] == 3 and fancy["train_j"] == pytest.approx(200.0)
    assert fancy["energy_vs_backprop"] == pytest.approx(10.0)  # 200 J / 20 J, both estimated
    assert fancy["time_to_target_vs_backprop"] == pytest.approx(10.0)
    assert fancy_measured["energy_vs_backprop"] == pytest.approx(60.0 / 5.0)  # against the measured 5 J
    assert rows["backprop", True]["energy_vs_backprop"] == 1.0
    assert fancy["key_params"] == "k=4" and rows["backprop", True]["key_params"] == ""
    assert fancy["energy_source"] == "estimate:codecarbon" and fancy_measured["energy_source"] == "rapl+nvml"
    assert fancy_measured["hardware_class"] == "GPU X" and rows["backprop", True]["hardware_class"] == "Xeon"


def test_ranking_page_shows_the_cells_formatted(store: Path, app) -> None:
    at = app(store, task="ltsf", preset="tiny")
    shown = html_table(at, "ranking")
    assert list(zip(shown["method"], shown["energy"])) == [
        ("fancy", "measured"), ("fancy", "estimated"), ("backprop", "estimated"), ("backprop", "measured")]
    # one scale for the column (its median, 40 J, reads in J); 3 significant digits
    assert list(shown["train energy (J)"]) == ["60.0", "200", "20.0", "5.00"]
    assert list(shown["vs backprop"]) == ["12.0×", "10.0×", "1.00×", "1.00×"]
    assert list(shown["mse median"]) == ["0.230", "0.250", "0.400", "0.450"]
    assert "estimate" in at.warning[0].value  # estimates are marked, never mixed silently
    assert at.get("download_button")[0].proto.label == "Download CSV (full precision)"
    assert dict(at.query_params) == {"task": "ltsf", "preset": "tiny"}


def test_csv_export_keeps_full_precision(store: Path) -> None:
    Store(store).write_run(row("exact", "precise", 0, 0.123456789, 225.1142))
    table = Board(store).ranking(Filters(task="ltsf", preset="tiny"))
    back = pd.read_csv(io.StringIO(table.to_csv(index=False)))
    assert len(back) == 5 and back.set_index("method").loc["precise", "train_j"] == 225.1142
    assert back.set_index("method").loc["precise", "quality"] == 0.123456789


def test_pareto_chart_marks_the_front_within_each_energy_kind(store: Path, app) -> None:
    at = app(store, task="ltsf", preset="tiny", tab="pareto")
    (chart,) = charts(at, "Pareto front")
    layers = json.loads(chart.proto.spec)["layer"]
    assert layers[0]["encoding"]["x"]["scale"]["type"] == "log"
    assert layers[0]["encoding"]["href"]["field"] == "detail"  # a click leads to the run detail
    ring = next(layer for layer in layers if layer.get("name") == "front_ring")
    assert ring["transform"] == [{"filter": "datum.pareto"}] and ring["mark"]["filled"] is False
    data = chart_data(chart).set_index("run_key")
    # estimated: 0.3 at 10 J, then 0.2 at 100 J; measured: 0.45 at 5 J, then 0.22 at 50 J
    assert set(data.index[data["pareto"]]) == {"bp0", "fx0", "bpm", "fxm0"}
    assert len(data) == 9  # the failed run has no point; the pet run is another task
    assert data.loc["fx0", "params"] == "k=4" and data.loc["bp0", "params"] == "(defaults)"
    assert data.loc["fx0", "detail"] == "?task=ltsf&preset=tiny&tab=run&run=fx0"


def test_filters_hide_estimates_methods_hardware(store: Path, app) -> None:
    at = app(store, task="ltsf")
    at.sidebar.toggle(key="hide_estimates").set_value(True).run()
    table = html_table(at, "ranking")
    assert list(table["method"]) == ["fancy", "backprop"] and set(table["energy"]) == {"measured"}
    assert not at.warning
    at.sidebar.toggle(key="hide_estimates").set_value(False).run()
    at.sidebar.multiselect(key="methods").set_value(["fancy"]).run()
    table = html_table(at, "ranking")
    assert set(table["method"]) == {"fancy"}
    # the baseline is backprop of the same task and preset, whichever methods are shown
    assert sorted(table["vs backprop"]) == ["10.0×", "12.0×"]
    at.sidebar.multiselect(key="methods").set_value([]).run()
    assert at.sidebar.multiselect(key="hw").options == ["GPU X", "Xeon"]
    at.sidebar.multiselect(key="hw").set_value(["GPU X"]).run()  # outside the cached cells: aggregated again
    assert sorted(html_table(at, "ranking")["seeds"]) == ["1", "2"]


def test_failed_attempts_counted_and_older_code_cells_hidden(results: Path) -> None:
    s = Store(results)
    for seed in (0, 1):
        s.write_run(row(f"new{seed}", "backprop", seed, 0.3, 10.0, lineage_key="L", cell_key="C2", code_hash="new"))
    s.write_run(row("old0", "backprop", 0, 0.5, 9.0, lineage_key="L", cell_key="C1", code_hash="old",
                    finished_at=T0 - timedelta(days=1)))
    s.write_run(row("new9", "backprop", 9, None, None, status="failed", lineage_key="L", cell_key="C2",
                    code_hash="new"))
    board = Board(results)
    latest = board.ranking(Filters(task="ltsf", preset="tiny"))
    assert len(latest) == 1 and latest["failed"].iloc[0] == 1 and latest["seeds"].iloc[0] == 2
    both = board.ranking(Filters(task="ltsf", preset="tiny", older_code=True))
    assert sorted(both["is_latest_code"]) == [False, True]


def test_presets_follow_the_task(store: Path, app) -> None:
    at = app(store, task="ltsf")
    assert at.sidebar.selectbox(key="task").options == ["ltsf", "pet"]
    assert at.sidebar.selectbox(key="preset").options == ["tiny"]
    at.sidebar.selectbox(key="task").set_value("pet").run()
    assert at.sidebar.selectbox(key="preset").value == "small"
    table = html_table(at, "ranking")
    assert list(table["f1 median"]) == ["0.800"]
    assert dict(at.query_params) == {"task": "pet", "preset": "small"}


def test_overview_is_the_landing_page_and_keeps_energy_kinds_apart(store: Path, app) -> None:
    at = app(store)
    tables = [TableText("overview") for _ in at.get("html")]
    for parser, element in zip(tables, at.get("html")):
        parser.feed(element.proto.body)
    measured, estimated = [pd.DataFrame([r for r in t.rows if r], columns=t.headers) for t in tables if t.headers]
    assert list(measured["task"]) == ["ltsf"] and list(estimated["task"]) == ["ltsf", "pet"]
    assert measured["reached by"].iloc[0] == "fancy · dlinear · k=4"  # 0.23, measured
    assert estimated["reached by"].iloc[0] == "fancy · dlinear · k=4"
    assert '<a href="?task=pet&amp;preset=small"' in "".join(e.proto.body for e in at.get("html"))
    overview = Board(store).overview().set_index(["task", "estimated"])
    assert overview.loc[("ltsf", True), "backprop_quality"] == pytest.approx(0.4)


def test_overview_names_the_cheapest_cell_reaching_the_target(results: Path) -> None:
    s = Store(results)
    for method, joules, reached in (("backprop", 50.0, True), ("cheap", 10.0, True), ("cheaper", 5.0, False)):
        for seed in (0, 1):
            s.write_run(row(f"{method}{seed}", method, seed, 0.3, joules * 2, target=0.4, reached_target=reached,
                            energy_to_target_j=joules if reached else None, params="{}"))
    line = Board(results).overview().iloc[0]
    assert line["cheapest_by"].startswith("cheap ·") and line["cheapest_energy_to_target_j"] == 10.0
    assert line["backprop_energy_to_target_j"] == 50.0


def test_learning_curves_plot_the_primary_metric(store: Path, app) -> None:
    at = app(store, task="ltsf", tab="curves")
    by_energy, by_time = charts(at, "validation mse against training energy"), charts(at, "against training time")
    data = chart_data(by_energy[0])
    assert sorted(data["value"].round(3).unique()) == [0.333, 0.5, 1.0]  # mse = 1/step, never mae = 9
    assert sorted(data["run_key"].unique()) == ["bp0", "bp1", "bp2"]
    assert sorted(chart_data(by_time[0])["train_s"].unique()) == pytest.approx([0.1, 0.2, 0.3])


def test_only_the_chosen_view_is_drawn(store: Path, app) -> None:
    at = app(store, task="ltsf")
    assert not at.get("vega_lite_chart")  # the ranking: no chart queried or drawn
    at.radio(key="tab").set_value("pareto").run()
    assert charts(at, "Pareto front") and at.query_params["tab"] == "pareto"


def test_scaling_view_colours_by_devices_and_batch(store: Path, app) -> None:
    at = app(store, task="ltsf", tab="scaling")
    data = chart_data(charts(at, "energy against device-hours")[0]).set_index("run_key")
    assert data.loc["bp2", "world_size"] == 4 and data.loc["bp2", "global_batch"] == 128
    hours = 2 * 2.0 / 3600  # the training window: world_size x train_s, as train_energy_j
    assert data.loc["bp1", "samples_per_device_hour"] == pytest.approx(100 / hours)
    assert data.loc["bp1", "updates_per_device_hour"] == pytest.approx(10 / hours)
    assert data.loc["bp1", "train_device_hours"] == pytest.approx(hours)
    assert any("R² =" in m.value for m in at.markdown) and any("by construction" in w.value for w in at.warning)
    assert charts(at, "samples and gradient updates per device-hour")


def test_plot_export_renders_png_and_svg(store: Path, app) -> None:
    at = app(store, task="ltsf", tab="pareto")
    at.checkbox(key="export-ltsf-tiny-pareto").check().run()
    labels = [b.proto.label for b in at.get("download_button")]
    assert "PNG" in labels and "SVG" in labels


def test_run_detail_shows_error_phases_and_curve(store: Path, app) -> None:
    at = app(store, task="ltsf", tab="run", run="bad")
    assert at.selectbox(key="run_key").value == "bad"  # the address names the run
    assert "RuntimeError: boom" in at.error[0].value and "Traceback" in at.code[0].value
    at.selectbox(key="run_key").set_value("bp1").run()
    assert at.query_params["run"] == "bp1"
    phases = html_table(at, "phases").set_index("phase")
    assert phases.loc["train", "energy (J)"] == "20.0"
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
    table = Board(results).ranking(Filters(task="ltsf", preset="tiny"))
    assert list(table["method"]) == ["backprop"] and table["seeds"].iloc[0] == 2
    median = sum(r["primary_value"] for r in rows) / 2
    assert table["quality"].iloc[0] == pytest.approx(median)
    assert table["hardware_class"].iloc[0] and table["budget"].iloc[0] == "40 steps"
    at = app(results, task="ltsf")
    assert html_table(at, "ranking")["mse median"].iloc[0] == sig3(median)
    at.radio(key="tab").set_value("curves").run()
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


def test_figures_three_significant_digits_one_scale_per_column() -> None:
    from joulebench.leaderboard.units import scale_for

    assert [sig3(v) for v in (225.1142, 0.37764, 12345.0, 999.6, 9.996, 1.0)] == [
        "225", "0.378", "12300", "1000", "10.0", "1.00"]
    energy = scale_for([225.11, 1187.6, 2244.6], "J")  # the median decides: kJ for the whole column
    assert energy.label == "kJ" and [energy.show(v) for v in (225.11, 2244.6)] == ["0.225", "2.24"]
    assert scale_for([30.0, 200.0], "s").label == "min" and scale_for([5e3, 8e3], "s").label == "h"
    assert scale_for([None, float("nan")], "J").label == "J"


CELL_FIELDS = ["cell", "estimated", "seeds", "runs", "failed", "quality", "train_j", "is_latest_code"]


def cells_of(board: Board, older_code: bool = True) -> pd.DataFrame:
    frame = board.cells(Filters(older_code=older_code))[CELL_FIELDS]
    return frame.sort_values(["cell", "estimated"]).reset_index(drop=True)


def test_refresh_reads_only_new_files_and_drops_what_compaction_replaced(store: Path) -> None:
    board = Board(store)  # a fresh store: every file read once, cells aggregated
    files = len(board.listed)
    assert board.files_read() == files
    Store(store).write_run(row("late", "fancy", 9, 0.1, 1.0, params=json.dumps({"k": 4})))
    board.refresh(max_age_s=0)
    assert board.files_read() == 1 and board.count() == 12
    Store(store).compact()  # the loose files are now skipped by the listing, a part holds them
    board.refresh(max_age_s=0)
    assert board.files_read() == 1 and len(board.listed) == 1 and board.count() == 12
    assert board.df("SELECT count(*) AS n FROM run_copy")["n"].iloc[0] == 12  # dropped, not doubled
    # the cells kept up incrementally are the cells aggregated from scratch
    (store / ".leaderboard").rename(store / ".old-snapshots")
    fresh = Board(store)
    pd.testing.assert_frame_equal(cells_of(board), cells_of(fresh), check_dtype=False)
    pd.testing.assert_frame_equal(board.overview(), fresh.overview(), check_dtype=False)
    fancy = board.ranking(Filters(task="ltsf", preset="tiny")).set_index(["method", "estimated"])
    assert fancy.loc[("fancy", True), "seeds"] == 4 and fancy.loc[("fancy", True), "quality"] == pytest.approx(0.225)


def test_a_new_process_draws_the_first_page_from_the_persisted_cells(store: Path) -> None:
    first = Board(store)
    second = Board(store)  # as a restarted server finds the store: unchanged
    assert second.copy is None  # no run read, nothing aggregated
    pd.testing.assert_frame_equal(cells_of(second), cells_of(first), check_dtype=False)
    pd.testing.assert_frame_equal(second.overview(), first.overview(), check_dtype=False)
    assert list(second.ranking(Filters(task="ltsf", preset="tiny"))["method"]) == ["fancy", "fancy", "backprop",
                                                                                    "backprop"]
    script = ("import sys; from joulebench.leaderboard.queries import Board, Filters; "
              f"b = Board({str(store)!r}); b.overview(); b.ranking(Filters(task='ltsf', preset='tiny')); "
              "assert b.copy is None; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # labels need the methods' declarations, never their import


def test_cells_are_the_store_leaderboard_view_split_by_energy_kind(results: Path) -> None:
    s = Store(results)
    for seed in (0, 1, 2):
        s.write_run(row(f"a{seed}", "backprop", seed, 0.3 + seed / 10, 10.0 + seed, cell_key="A", lineage_key="L",
                        code_hash="new"))
        s.write_run(row(f"b{seed}", "fancy", seed, 0.2 + seed / 10, 50.0, estimated=False, cell_key="B",
                        lineage_key="M", code_hash="h", params=json.dumps({"k": 4})))
    s.write_run(row("o0", "backprop", 0, 0.9, 9.0, cell_key="O", lineage_key="L", code_hash="old",
                    finished_at=T0 - timedelta(days=1)))
    s.write_run(row("a0", "backprop", 0, None, None, status="failed", cell_key="A", lineage_key="L",
                    code_hash="new", started_at=T0 - timedelta(hours=1)))  # an older failed attempt of a0
    view = s.execute("SELECT cell_key AS cell, energy_estimated AS estimated, seeds, runs, "
                     "failed_attempts AS failed, primary_median AS quality, train_energy_j AS train_j, "
                     "is_latest_code FROM leaderboard ORDER BY cell").df()
    mine = cells_of(Board(results))
    assert list(view["cell"]) == ["A", "B", "O"] and list(view["failed"]) == [1, 0, 0]
    for column in CELL_FIELDS:
        assert mine[column].tolist() == view[column].tolist(), column


def test_compact_prepares_the_cells_a_new_server_reads_first(store: Path, capsys) -> None:
    """``joulebench compact`` runs the leaderboard's heavy queries once for the compacted state,
    so the first page after a compaction reads persisted cells instead of every run."""
    from joulebench.harness.cli import main

    assert main(["compact", "--results", str(store), "--grace", "0"]) == 0
    assert "leaderboard cells prepared" in capsys.readouterr().out
    board = Board(store)
    assert board.copy is None  # drawn from the snapshot: no run read, nothing aggregated
    assert not board.cells(Filters()).empty
    assert main(["compact", "--results", str(store), "--no-cells"]) == 0
    assert "leaderboard cells" not in capsys.readouterr().out
