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

import pandas as pd
import streamlit as st

from joulebench.leaderboard.queries import Board, Filters

TTL_S = 10
MAX_POINTS = 2000
MAX_CURVES = 200


def results_root() -> Path:
    """The store to show; plugins named with ``--plugin`` join the registry first."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", default=os.environ.get("JOULEBENCH_RESULTS", "results"))
    parser.add_argument("--plugin", action="append", default=[])
    args, _ = parser.parse_known_args(sys.argv[1:])
    if args.plugin:
        from joulebench.harness.registry import registry
        registry(args.plugin)
    return Path(args.results)


@st.cache_resource
def board(root: str) -> Board:
    return Board(Path(root))


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=256)
def query(root: str, name: str, filters: Filters | None = None, *args) -> object:
    b = board(root)
    b.refresh(max_age_s=TTL_S)
    method = getattr(b, name)
    return method(filters, *args) if filters is not None else method(*args)


def sidebar(root: str) -> Filters:
    st.sidebar.header("Filters")
    side = st.sidebar
    task = side.selectbox("Task", query(root, "distinct", None, "task"), key="task")
    preset = side.selectbox("Preset", query(root, "distinct", None, "preset", task), key="preset")
    methods = side.multiselect("Methods", query(root, "distinct", None, "method"), key="methods")
    hardware = side.multiselect("Hardware", query(root, "distinct", None, "hardware"), key="hw",
                                help="the GPU model, or the CPU model for CPU runs")
    campaigns = side.multiselect("Campaigns", query(root, "distinct", None, "campaign"), key="camp")
    statuses = side.multiselect("Status", query(root, "distinct", None, "status"), default=["ok"], key="status")
    since = side.date_input("Finished since", value=None, key="since")
    hide = side.toggle("Hide estimated energy", value=False, key="hide_estimates",
                       help="leave out runs whose energy is an estimate (no sensor was readable)")
    trials = side.toggle("Include search trials", value=False, key="trials")
    return Filters(task=task, preset=preset, methods=tuple(methods), hardware=tuple(hardware),
                   campaigns=tuple(campaigns), statuses=tuple(statuses), since=since or None,
                   hide_estimates=hide, include_trials=trials)


def field(name: str, kind: str = "quantitative", title: str | None = None, **extra) -> dict:
    return {"field": name, "type": kind, "title": name if title is None else title, **extra}


def show_chart(data: pd.DataFrame, spec: dict, key: str, export: str | None = None) -> None:
    """Draw a Vega-Lite spec over ``data`` (plain dicts: Altair's schema checks cost ~30 ms a chart)."""
    st.vega_lite_chart(spec={"$schema": "https://vega.github.io/schema/vega-lite/v6.json", **spec,
                             "data": {"name": "rows"}, "datasets": {"rows": data}}, key=key)
    if export:
        export_chart(data, spec, export)


def export_chart(data: pd.DataFrame, spec: dict, name: str) -> None:
    """PNG and SVG downloads of a chart, rendered offline by vl-convert (only on request: each
    image costs about a tenth of a second)."""
    if not st.checkbox("Export as PNG / SVG", key=f"export-{name}"):
        return
    import vl_convert as vlc

    values = json.loads(data.to_json(orient="records", date_format="iso"))
    full = {**spec, "data": {"values": values}, "width": spec.get("width", 700)}
    left, right = st.columns(2)
    left.download_button("PNG", vlc.vegalite_to_png(full, scale=2), f"{name}.png", "image/png", key=f"png-{name}")
    right.download_button("SVG", vlc.vegalite_to_svg(full), f"{name}.svg", "image/svg+xml", key=f"svg-{name}")


def fmt(value: object, missing: object = "—") -> object:
    """A figure for the page: 4 significant digits, and ``missing`` for None or NaN."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return missing
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def stem(f: Filters) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{f.task}-{f.preset}")


def ranking_tab(root: str, f: Filters) -> None:
    table = query(root, "ranking", f)
    if table.empty:
        st.info("No runs match these filters.")
        return
    metric = table["metric"].iloc[0]
    if table["estimated"].any():
        st.warning("Energy marked estimated comes from a model (no sensor was readable): compare it with other "
                   "estimates only. Estimated and measured runs are ranked in separate rows, and each is "
                   "compared with the backprop baseline of its own kind.")
    shown = table.rename(columns={"quality": f"{metric} (median)", "spread": f"{metric} IQR",
                                  "quality_q25": f"{metric} q25", "quality_q75": f"{metric} q75"})
    st.dataframe(shown, hide_index=True, key="ranking")
    st.caption("median over seeds; IQR = q75 − q25; *_vs_backprop: ratio to the backprop configuration "
               "with the most runs in this task and preset (same energy kind)")
    st.download_button("Download CSV", shown.to_csv(index=False), f"{stem(f)}-ranking.csv", "text/csv", key="csv")


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
    x = field("train_energy_j", title="training energy (J, log)", scale={"type": "log"})
    y = field("primary_value", title=metric, scale={"zero": False})
    spec = {"title": f"{f.task} / {f.preset}: {metric} against training energy (dashed: Pareto front)",
            "height": 380, "layer": [
                {"mark": {"type": "point", "filled": True, "size": 60},
                 "encoding": {"x": x, "y": y, "color": field("method", "nominal"),
                              "shape": field("estimated", "nominal", "energy estimated"),
                              "tooltip": [field(c, "nominal") for c in ("run_key", "method", "model", "seed",
                                                                      "hardware", "energy_source")]
                              + [field("primary_value"), field("train_energy_j")]}},
                {"transform": [{"filter": "datum.pareto"}],  # one front per energy kind
                 "mark": {"type": "line", "color": "#555", "strokeDash": [4, 3]},
                 "encoding": {"x": x, "y": y, "detail": field("estimated", "nominal"),
                              "order": field("train_energy_j")}}]}
    show_chart(points, spec, "pareto", f"{stem(f)}-pareto")


def curves_tab(root: str, f: Filters) -> None:
    keys = query(root, "run_keys", f, MAX_CURVES)
    curves = query(root, "curves", None, keys)
    curves = curves.dropna(subset=["value"])
    if curves.empty:
        st.info("No learning curves stored for these runs.")
        return
    metric = curves["primary_metric"].iloc[0]
    if len(keys) == MAX_CURVES:
        st.caption(f"the {MAX_CURVES} newest matching runs")
    for x, title in (("train_energy_j", "training energy (J)"), ("train_s", "training time (s)")):
        spec = {"title": f"validation {metric} against {title}", "height": 300,
                "mark": {"type": "line", "point": True},
                "encoding": {"x": field(x, title=title),
                             "y": field("value", title=f"validation {metric}", scale={"zero": False}),
                             "color": field("method", "nominal"),
                             "strokeDash": field("estimated", "nominal", "energy estimated"),
                             "detail": field("run_key", "nominal"),
                             "tooltip": [field("run_key", "nominal"), field("method", "nominal"), field("seed"),
                                         field("step"), field(x), field("value")]}}
        show_chart(curves.drop(columns=["metrics_json"]), spec, f"curve-{x}", f"{stem(f)}-curve-{x}")


def scaling_tab(root: str, f: Filters) -> None:
    rows = query(root, "scaling", f)
    if rows.empty or rows["world_size"].nunique() < 2 and rows["global_batch"].nunique() < 2:
        st.info("A scaling view needs runs with several device counts or batch sizes "
                "(see examples/campaigns/scaling.toml).")
        return
    tooltip = [field("run_key", "nominal"), field("method", "nominal")] + [
        field(c) for c in ("world_size", "local_batch", "global_batch", "samples_per_device_hour",
                           "updates_per_device_hour")]
    energy = {"title": "energy against device-hours", "height": 320,
              "mark": {"type": "point", "filled": True, "size": 60},
              "encoding": {"x": field("train_device_hours", title="device-hours (training window)"),
                           "y": field("train_energy_j", title="training energy (J)"),
                           "color": field("world_size", "ordinal", "devices", scale={"scheme": "tableau10"}),
                           "shape": field("global_batch", "ordinal", "global batch"), "tooltip": tooltip}}
    show_chart(rows, energy, "scaling", f"{stem(f)}-scaling-energy")
    scaling_fits(rows)
    rates = {"title": "samples and gradient updates per device-hour",
             "transform": [{"fold": ["samples_per_device_hour", "updates_per_device_hour"],
                            "as": ["rate", "per_device_hour"]}],
             "mark": {"type": "point", "filled": True, "size": 60},
             "width": 300, "height": 260,
             "encoding": {"x": field("world_size", "ordinal", "devices"),
                          "y": field("per_device_hour", title="per device-hour", scale={"type": "log"}),
                          "color": field("global_batch", "ordinal", "global batch", scale={"scheme": "tableau10"}),
                          "column": field("rate", "nominal", ""), "tooltip": tooltip}}
    show_chart(rows, rates, "scaling-rates", f"{stem(f)}-scaling-rates")
    st.dataframe(rows, hide_index=True, key="scaling-table")


def scaling_fits(rows: pd.DataFrame) -> None:
    """The study's two fits (energy on device-hours; J/device-hour on throughputs), computed by
    ``cluster.scaling`` so the CLI and this view agree; estimates are marked."""
    from joulebench.cluster.scaling import ESTIMATE_NOTE, scaling_report
    from joulebench.harness.params import SpecError

    try:
        report = scaling_report(rows)
    except SpecError as exc:
        st.caption(f"No fit: {exc}")
        return
    st.markdown("\n".join(f"- {line}" for line in report.describe().splitlines()
                          if not line.startswith("note:")))
    if report.estimated:
        st.warning(f"Estimated energy: {ESTIMATE_NOTE}.")


def run_tab(root: str, f: Filters) -> None:
    runs = query(root, "run_list", replace(f, statuses=()), 500)
    if runs.empty:
        st.info("No runs.")
        return
    labels = {k: f"{m} · {model} · seed {s} · {st_} · {k}" for k, m, model, s, st_ in
              runs[["run_key", "method", "model", "seed", "status"]].itertuples(index=False)}
    key = st.selectbox("Run (newest 500 matching the filters, any status)", list(labels), key="run_key",
                       format_func=labels.get)
    row = query(root, "run", None, key)
    if row is None:
        st.info("That run is no longer in the store.")
        return
    if row.get("error"):
        st.error(f"{row['status']}: {row['error']}")
        if row.get("traceback"):
            st.code(row["traceback"])
    phases = pd.DataFrame({
        "phase": ["setup", "train", "eval", "total"],
        "seconds": [row.get("setup_s"), row.get("train_s"), row.get("eval_s"), row.get("wall_s")],
        "joules": [row.get("setup_energy_j"), row.get("train_energy_j"), row.get("eval_energy_j"),
                   row.get("total_energy_j")]})
    st.subheader("Energy per phase" + (" (estimated)" if row.get("estimated") else ""))
    st.dataframe(phases, hide_index=True, key="phases")
    parts = pd.DataFrame({"part": ["cpu", "gpu", "dram"],
                          "train joules": [row.get(f"train_energy_{p}_j") for p in ("cpu", "gpu", "dram")],
                          "source": [row.get(f"energy_{p}_source") for p in ("cpu", "gpu", "dram")]})
    st.dataframe(parts, hide_index=True, key="parts")
    st.caption(f"energy source: {fmt(row.get('energy_source'))}; notes: {fmt(row.get('energy_notes'))}; "
               f"CO2 {fmt(row.get('co2_g'))} g at {fmt(row.get('carbon_intensity_g_per_kwh'))} g/kWh "
               f"({fmt(row.get('carbon_source'))})")
    curves = query(root, "curves", None, [key])
    curves = curves.dropna(subset=["value"])
    if not curves.empty:
        st.subheader("Learning curve")
        metric = curves["primary_metric"].iloc[0]
        spec = {"height": 260, "mark": {"type": "line", "point": True},
                "encoding": {"x": field("train_energy_j", title="training energy (J)"),
                             "y": field("value", title=f"validation {metric}", scale={"zero": False}),
                             "tooltip": [field(c) for c in ("step", "train_s", "train_energy_j", "value")]}}
        show_chart(curves.drop(columns=["metrics_json"]), spec, "run-curve")
    st.subheader("Spec")
    st.json(row.get("spec_json") or "{}", expanded=True)
    st.subheader("Provenance")
    shown = ("harness_version", "git_commit", "host", "device", "cpu_model", "cpu_count", "gpu_model", "world_size",
             "nodes", "slurm_job_id", "campaign", "parent_key", "python_version", "torch_version",
             "numpy_version", "started_at", "finished_at")
    st.json({k: fmt(row.get(k), None) for k in shown}, expanded=True)


def main() -> None:
    st.set_page_config(page_title="joulebench leaderboard", layout="wide")
    st.title("joulebench leaderboard")
    root = str(results_root())
    if query(root, "count") == 0:
        st.info(f"No runs stored in {root} yet. Produce some, then reload:\n\n"
                "    joulebench run --task ltsf --method backprop --preset tiny\n"
                "    joulebench campaign run examples/campaigns/demo.toml -j 2\n\n"
                "and start the leaderboard over the same store (`--results DIR`).")
        return
    f = sidebar(root)
    st.subheader(f"Task {f.task}, preset {f.preset}")
    tabs = st.tabs(["Ranking", "Pareto front", "Learning curves", "Scaling", "Run detail"])
    for tab, render in zip(tabs, (ranking_tab, pareto_tab, curves_tab, scaling_tab, run_tab)):
        with tab:
            render(root, f)


main()
