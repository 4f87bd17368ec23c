"""The leaderboard: table contents and chart data against known rows (Streamlit AppTest)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from joulebench.harness.store import Store
from joulebench.leaderboard.queries import Board, Filters

APP = str(Path(__file__).resolve().parents[1] / "leaderboard" / "app.py")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BACKPROP = json.dumps({"clip_norm": 0.0, "lr": 0.001, "momentum": 0.9, "optimizer": "adam",
                       "schedule": "constant", "warmup_steps": 0, "weight_decay": 0.0}, sort_keys=True)


def row(key: str, method: str, seed: int, mse: float, joules: float, estimated: bool = True,
        status: str = "ok", params: str = BACKPROP, **extra) -> dict:
    return {"run_key": key, "task": "ltsf", "preset": "tiny", "method": method, "model": "dlinear",
            "seed": seed, "status": status, "primary_metric": "mse", "primary_value": mse,
            "higher_is_better": False, "method_params": params, "train_energy_j": joules,
            "train_s": None if joules is None else joules / 10, "samples": 100, "energy_estimated": estimated,
            "energy_source": "estimate:codecarbon" if estimated else "rapl",
            "time_to_target_s": None if joules is None else joules / 20, "spec_json": json.dumps({"task": "ltsf", "seed": seed}),
            "started_at": T0 + timedelta(minutes=seed), "finished_at": T0 + timedelta(minutes=seed, seconds=9),
            **extra}


@pytest.fixture
def store(results: Path) -> Path:
    s = Store(results)
    for seed, (mse, joules) in enumerate([(0.3, 10.0), (0.4, 20.0), (0.5, 30.0)]):
        s.write_run(row(f"bp{seed}", "backprop", seed, mse, joules),
                    [{"run_key": f"bp{seed}", "task": "ltsf", "method": "backprop", "step": step,
                      "run_started_at": T0 + timedelta(minutes=seed), "train_s": step / 10.0,
                      "train_energy_j": step * 1.0, "metrics_json": json.dumps({"mse": 1.0 / step})}
                     for step in (1, 2, 3)])
    for seed, (mse, joules) in enumerate([(0.2, 100.0), (0.25, 200.0), (0.35, 300.0)]):
        s.write_run(row(f"fx{seed}", "fancy", seed, mse, joules, estimated=False,
                        params=json.dumps({"k": 4})))
    s.write_run(row("bad", "fancy", 7, None, None, status="failed", error="RuntimeError: boom"))
    return results


def app(root: Path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state  # noqa: B018 - created lazily
    import os

    os.environ["JOULEBENCH_RESULTS"] = str(root)
    return at.run()


def chart_data(element) -> pa.Table:
    return pa.ipc.open_stream(element.proto.datasets[0].data.data).read_all()


def test_empty_store_explains_how_to_produce_runs(results: Path) -> None:
    at = app(results)
    assert not at.exception
    assert "No runs stored" in at.info[0].value and "joulebench run" in at.info[0].value


def test_ranking_medians_order_and_ratio_to_backprop(store: Path) -> None:
    at = app(store)
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["method"]) == ["fancy", "backprop"]  # lower MSE ranks first
    fancy, backprop = table.iloc[0], table.iloc[1]
    assert fancy["mse (median)"] == pytest.approx(0.25) and backprop["mse (median)"] == pytest.approx(0.4)
    assert fancy["seeds"] == 3 and fancy["train_j"] == pytest.approx(200.0)
    assert fancy["energy_vs_backprop"] == pytest.approx(10.0) and backprop["energy_vs_backprop"] == 1.0
    assert fancy["key_params"] == "k=4" and backprop["key_params"] == ""
    assert "estimate" in at.warning[0].value  # estimates are marked, never mixed silently
    assert at.get("download_button")[0].proto.label == "Download CSV"


def test_pareto_chart_data_marks_the_front(store: Path) -> None:
    at = app(store)
    charts = at.get("vega_lite_chart")
    spec = json.loads(charts[0].proto.spec)
    assert spec["layer"][0]["encoding"]["x"]["scale"]["type"] == "log"
    data = chart_data(charts[0]).to_pandas().set_index("run_key")
    # cheapest run (0.3 at 10 J), then 0.25 at 200 J and 0.2 at 100 J: 100 J beats 200 J
    assert set(data.index[data["pareto"]]) == {"bp0", "fx0"}
    assert len(data) == 6  # the failed run has no point


def test_hiding_estimates_and_filtering_methods(store: Path) -> None:
    at = app(store)
    at.sidebar.toggle(key="hide_estimates").set_value(True).run()
    assert list(at.dataframe[0].value["method"]) == ["fancy"]
    at.sidebar.toggle(key="hide_estimates").set_value(False).run()
    at.sidebar.multiselect(key="methods").set_value(["backprop"]).run()
    assert list(at.dataframe[0].value["method"]) == ["backprop"]


def test_curves_and_run_detail(store: Path) -> None:
    at = app(store)
    curves = [c for c in at.get("vega_lite_chart") if "training energy" in c.proto.spec
              and "validation" in c.proto.spec]
    data = chart_data(curves[0]).to_pandas()
    assert sorted(data["value"].round(3).unique()) == [0.333, 0.5, 1.0]
    at.selectbox(key="run_key").set_value("bad").run()
    assert "RuntimeError: boom" in at.error[0].value


def test_queries_bind_filters_instead_of_pasting_them(store: Path) -> None:
    board = Board(store)
    assert board.ranking(Filters(task="ltsf' OR '1'='1", preset="tiny")).empty
    assert len(board.ranking(Filters(task="ltsf", preset="tiny", statuses=()))) == 3  # + the failed run
