"""The joulebench leaderboard (Streamlit): rankings, Pareto fronts, learning curves, scaling, runs.

Start it with ``joulebench leaderboard [--results DIR]``; it reads the store named by
``JOULEBENCH_RESULTS`` (or ``--results`` after ``--``) and re-queries every few seconds, so new
runs appear without a restart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from joulebench.leaderboard.queries import Board, Filters

TTL_S = 10
MAX_POINTS = 2000


def results_root() -> Path:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", default=os.environ.get("JOULEBENCH_RESULTS", "results"))
    args, _ = parser.parse_known_args(sys.argv[1:])
    return Path(args.results)


@st.cache_resource
def board(root: str) -> Board:
    return Board(Path(root))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def query(root: str, name: str, filters: Filters | None = None, *args) -> object:
    b = board(root)
    b.refresh(max_age_s=TTL_S)
    method = getattr(b, name)
    return method(filters, *args) if filters is not None else method(*args)


def sidebar(root: str) -> Filters:
    st.sidebar.header("Filters")
    tasks = query(root, "distinct", None, "task")
    task = st.sidebar.selectbox("Task", tasks, key="task")
    presets = query(root, "distinct", None, "preset")
    preset = st.sidebar.selectbox("Preset", presets, key="preset")
    methods = st.sidebar.multiselect("Methods", query(root, "distinct", None, "method"), key="methods")
    hardware = st.sidebar.multiselect("Hardware (CPU)", query(root, "distinct", None, "cpu_model"), key="hw")
    campaigns = st.sidebar.multiselect("Campaigns", query(root, "distinct", None, "campaign"), key="camp")
    statuses = st.sidebar.multiselect("Status", query(root, "distinct", None, "status"), default=["ok"],
                                      key="status")
    since = st.sidebar.date_input("Finished since", value=None, key="since")
    hide = st.sidebar.toggle("Hide estimated energy", value=False, key="hide_estimates",
                             help="Rows whose energy is an estimate (no sensor) are left out")
    trials = st.sidebar.toggle("Include search trials", value=False, key="trials")
    return Filters(task=task, preset=preset, methods=tuple(methods), hardware=tuple(hardware),
                   campaigns=tuple(campaigns), statuses=tuple(statuses), since=since or None,
                   hide_estimates=hide, include_trials=trials)


def export_chart(chart: alt.Chart, name: str) -> None:
    """PNG and SVG downloads of a chart (rendered offline by vl-convert)."""
    import vl_convert as vlc

    if not st.checkbox("Export as PNG / SVG", key=f"export-{name}"):
        return  # rendering images costs ~0.1 s each: only on request
    spec = chart.to_json()
    left, right = st.columns(2)
    left.download_button("PNG", vlc.vegalite_to_png(spec, scale=2), f"{name}.png", "image/png",
                         key=f"png-{name}")
    right.download_button("SVG", vlc.vegalite_to_svg(spec), f"{name}.svg", "image/svg+xml",
                          key=f"svg-{name}")


def ranking_tab(root: str, f: Filters) -> None:
    table = query(root, "ranking", f)
    if table.empty:
        st.info("No runs match these filters.")
        return
    metric = table["metric"].iloc[0]
    if table["estimated"].any():
        st.warning("Energy figures marked estimated come from a model (no sensor was readable): "
                   "compare them with each other, not with measurements.")
    shown = table.rename(columns={"quality": f"{metric} (median)", "quality_iqr": f"{metric} IQR"})
    st.dataframe(shown, hide_index=True, key="ranking")
    st.download_button("Download CSV", shown.to_csv(index=False), f"{f.task}-{f.preset}-ranking.csv",
                       "text/csv", key="csv")


def pareto_tab(root: str, f: Filters) -> None:
    points = query(root, "points", f)
    if points.empty:
        st.info("No runs with both quality and energy.")
        return
    metric = points["primary_metric"].iloc[0]
    if len(points) > MAX_POINTS:  # the front is always drawn; the rest is a fixed sample
        rest = points[~points["pareto"]].sample(MAX_POINTS, random_state=0)
        st.caption(f"{len(points)} runs: the Pareto front and a sample of {MAX_POINTS} others are drawn")
        points = pd.concat([points[points["pareto"]], rest])
    base = alt.Chart(points).encode(
        x=alt.X("train_energy_j:Q", scale=alt.Scale(type="log"), title="training energy (J)"),
        y=alt.Y("primary_value:Q", title=metric, scale=alt.Scale(zero=False)))
    dots = base.mark_point(filled=True).encode(
        color="method:N", shape=alt.Shape("energy_estimated:N", title="estimated"),
        tooltip=["run_key", "method", "model", "seed", "primary_value", "train_energy_j", "energy_source"])
    front = base.transform_filter("datum.pareto").mark_line(color="black", strokeDash=[4, 3])
    chart = (dots + front).properties(title=f"{f.task} / {f.preset}: {metric} against energy", height=380)
    st.altair_chart(chart, key="pareto")
    export_chart(chart, f"{f.task}-{f.preset}-pareto")


def curves_tab(root: str, f: Filters) -> None:
    keys = query(root, "run_keys", f, 200)
    curves = query(root, "curves", None, keys)
    if curves.empty:
        st.info("No learning curves stored for these runs.")
        return
    metrics = curves["metrics_json"].map(json.loads)
    name = next(iter(metrics.iloc[0]))
    curves = curves.assign(value=[m.get(name) for m in metrics])
    for x, title in (("train_energy_j", "training energy (J)"), ("train_s", "training time (s)")):
        chart = alt.Chart(curves).mark_line(point=True).encode(
            x=alt.X(f"{x}:Q", title=title), y=alt.Y("value:Q", title=f"validation {name}"),
            color="method:N", detail="run_key:N").properties(height=300)
        st.altair_chart(chart, key=f"curve-{x}")


def scaling_tab(root: str, f: Filters) -> None:
    rows = query(root, "scaling", f)
    if rows.empty or rows["world_size"].nunique() < 2 and rows["global_batch"].nunique() < 2:
        st.info("A scaling view needs runs with several device counts or batch sizes "
                "(see examples/campaigns/scaling.toml).")
        return
    chart = alt.Chart(rows).mark_point(filled=True).encode(
        x=alt.X("device_hours:Q", title="device-hours"), y=alt.Y("train_energy_j:Q", title="training energy (J)"),
        color="world_size:N", shape="global_batch:N",
        tooltip=["run_key", "world_size", "local_batch", "global_batch",
                 "samples_per_device_hour", "updates_per_device_hour"]).properties(height=320)
    st.altair_chart(chart, key="scaling")
    st.dataframe(rows, hide_index=True, key="scaling-table")


def run_tab(root: str, f: Filters) -> None:
    keys = query(root, "run_keys", replace(f, statuses=()), 500)
    if not keys:
        st.info("No runs.")
        return
    key = st.selectbox("Run", keys, key="run_key")
    row = query(root, "run", None, key)
    if row.get("error"):
        st.error(f"{row['status']}: {row['error']}")
        if row.get("traceback"):
            st.code(row["traceback"])
    phases = pd.DataFrame({"phase": ["setup", "train", "eval"],
                           "seconds": [row.get("setup_s"), row.get("train_s"), row.get("eval_s")],
                           "joules": [row.get("setup_energy_j"), row.get("train_energy_j"), row.get("eval_energy_j")]})
    st.subheader("Phases")
    st.dataframe(phases, hide_index=True, key="phases")
    st.caption(f"energy source: {row.get('energy_source')} — cpu: {row.get('energy_cpu_source')}, "
               f"gpu: {row.get('energy_gpu_source')}, dram: {row.get('energy_dram_source')}")
    st.subheader("Spec")
    st.json(json.loads(row["spec_json"]) if row.get("spec_json") else {})
    st.subheader("Provenance")
    keys_shown = ("harness_version", "git_commit", "host", "cpu_model", "gpu_model", "world_size",
                  "slurm_job_id", "python_version", "torch_version", "started_at", "finished_at")
    st.json({k: str(row.get(k)) for k in keys_shown})
    curves = query(root, "curves", None, [key])
    if not curves.empty:
        st.subheader("Curve")
        st.dataframe(curves, hide_index=True, key="run-curve")


def main() -> None:
    st.set_page_config(page_title="joulebench leaderboard", layout="wide")
    st.title("joulebench leaderboard")
    root = str(results_root())
    if query(root, "count") == 0:
        st.info(f"No runs stored in {root} yet. Produce some, then reload:\n\n"
                "    joulebench run --task ltsf --method backprop --preset tiny\n"
                "    joulebench campaign run examples/campaigns/demo.toml -j 2")
        return
    f = sidebar(root)
    st.subheader(f"Task {f.task}, preset {f.preset}")
    tabs = st.tabs(["Ranking", "Pareto front", "Learning curves", "Scaling", "Run detail"])
    for tab, render in zip(tabs, (ranking_tab, pareto_tab, curves_tab, scaling_tab, run_tab)):
        with tab:
            render(root, f)


main()
