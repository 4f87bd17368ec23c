"""A task's page: its filters, then one view at a time (ranking, Pareto front, learning curves,
scaling, run detail), chosen in the address (``?task=ltsf&preset=small&tab=pareto``); only the
chosen view is queried and drawn."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from joulebench.harness.summary import key_params
from joulebench.leaderboard import scaling_view
from joulebench.leaderboard.charts import field, show_chart
from joulebench.leaderboard.queries import Filters
from joulebench.leaderboard.state import from_url, link, query, to_url
from joulebench.leaderboard.tables import Column, shown, to_html
from joulebench.leaderboard.units import fmt

MAX_POINTS = 2000
MAX_CURVES = 200


def sidebar(root: str) -> Filters:
    st.sidebar.header("Filters")
    side = st.sidebar
    tasks = query(root, "distinct", None, "task")
    from_url("task", tasks)
    task = side.selectbox("Task", tasks, key="task")
    presets = query(root, "distinct", None, "preset", task)
    from_url("preset", presets)
    preset = side.selectbox("Preset", presets, key="preset")
    methods = side.multiselect("Methods", query(root, "distinct", None, "method"), key="methods")
    hardware = side.multiselect("Hardware", query(root, "distinct", None, "hardware"), key="hw",
                                help="the GPU model, or the CPU model for CPU runs")
    campaigns = side.multiselect("Campaigns", query(root, "distinct", None, "campaign"), key="camp")
    statuses = side.multiselect("Status", query(root, "distinct", None, "status"), default=["ok"], key="status")
    since = side.date_input("Finished since", value=None, key="since")
    hide = side.toggle("Hide estimated energy", value=False, key="hide_estimates",
                       help="leave out runs whose energy is an estimate (no sensor was readable)")
    trials = side.toggle("Include search trials", value=False, key="trials")
    older = side.toggle("Show cells of older code", value=False, key="older_code",
                        help="cells whose configuration has newer results from a later code version")
    return Filters(task=task, preset=preset, methods=tuple(methods), hardware=tuple(hardware),
                   campaigns=tuple(campaigns), statuses=tuple(statuses), since=since or None,
                   hide_estimates=hide, include_trials=trials, older_code=older)


def stem(f: Filters) -> str:
    return scaling_view.stem(f)


def ranking_columns(metric: str) -> tuple[list[Column], list[Column]]:
    """The ranking's columns in two tables that fit a screen: quality and energy, then time, CO2
    and where the joules come from (the first four columns repeat, so each row is named)."""
    names = [Column("rank", "rank", "number"), Column("method", "method"), Column("model", "model"),
             Column("key_params", "parameters", help="parameters that differ from the defaults", optional=True)]
    main = names + [
        Column("budget", "budget", optional=True), Column("hardware_class", "hardware"),
        Column("energy_kind", "energy", help="estimated (a model; no sensor) or measured"),
        Column("quality", f"{metric} median", "number", "median over seeds"),
        Column("spread", f"{metric} IQR", "number", "q75 − q25 over seeds"),
        Column("seeds", "seeds", "number"), Column("failed", "failed", "number", "failed attempts of this cell"),
        Column("train_j", "train energy", "J", "median training energy"),
        Column("energy_vs_backprop", "vs backprop", "ratio", "train energy over the backprop baseline's"),
        Column("energy_to_target_j", "energy to target", "J"),
        Column("reached", "reached", "percent", "share of runs that reached the target")]
    cost = names + [
        Column("energy_to_target_vs_backprop", "energy to target vs backprop", "ratio"),
        Column("time_to_target_s", "time to target", "s"),
        Column("time_to_target_vs_backprop", "vs backprop", "ratio"),
        Column("train_s", "train time", "s"), Column("co2_g", "CO2", "g CO2"),
        Column("device_hours", "devices × time", "h"), Column("j_per_sample", "energy per sample", "J"),
        Column("energy_source", "energy source"),
        Column("code", "code", help="older: a newer code version of this configuration exists")]
    return main, cost


def ranking_view(root: str, f: Filters) -> None:
    table = query(root, "ranking", f)
    if table.empty:
        st.info("No runs match these filters.")
        return
    metric = table["metric"].iloc[0]
    if table["estimated"].any():
        st.warning("Energy marked estimated comes from a model (no sensor was readable): compare it with other "
                   "estimates only. Estimated and measured runs are ranked in separate rows, and each is "
                   "compared with the backprop baseline of its own kind.")
    rows = table.assign(energy_kind=table["estimated"].map({True: "estimated", False: "measured"}),
                        code=["latest" if x else "older" for x in table["is_latest_code"]])
    older = rows["code"].eq("older").tolist()
    for columns, test_id in zip(ranking_columns(metric), ("ranking", "ranking-cost")):
        st.html(to_html(shown(rows, columns), row_class=lambda i: "older" if older[i] else "",
                        test_id=test_id))
    st.caption("median over seeds; IQR = q75 − q25; vs backprop: ratio to the backprop cell with the most runs "
               "in this task and preset (same energy kind); hover a figure for its full value")
    full = table.rename(columns={"quality": f"{metric} (median)", "spread": f"{metric} IQR",
                                 "quality_q25": f"{metric} q25", "quality_q75": f"{metric} q75"})
    st.download_button("Download CSV (full precision)", full.to_csv(index=False), f"{stem(f)}-ranking.csv",
                       "text/csv", key="csv")


def pareto_points(points: pd.DataFrame, f: Filters) -> pd.DataFrame:
    """The drawn points: the front always, a fixed sample of the rest; with what differs and a link."""
    if len(points) > MAX_POINTS + points["pareto"].sum():
        rest = points[~points["pareto"]].sample(MAX_POINTS, random_state=0)
        st.caption(f"{len(points)} runs: the Pareto front and a sample of {MAX_POINTS} others are drawn")
        points = pd.concat([points[points["pareto"]], rest])
    params = [key_params(t, p, m, mp, tp) for t, p, m, mp, tp in
              points[["task", "preset", "method", "method_params", "task_params"]].itertuples(index=False)]
    return points.drop(columns=["method_params", "task_params"]).assign(
        params=[p or "(defaults)" for p in params],
        label=[f"{m} {p}".strip() for m, p in zip(points["method"], params)],
        detail=[link(task=f.task, preset=f.preset, tab="run", run=k) for k in points["run_key"]])


def pareto_view(root: str, f: Filters) -> None:
    points = query(root, "points", f)
    if points.empty:
        st.info("No runs with both quality and energy.")
        return
    metric = points["primary_metric"].iloc[0]
    points = pareto_points(points, f)
    x = field("train_energy_j", title="training energy (J, log)", scale={"type": "log"})
    y = field("primary_value", title=metric, scale={"zero": False})
    tooltip = [field(c, "nominal") for c in ("method", "model", "params", "seed", "hardware", "energy_source",
                                             "run_key")] + [field("primary_value", title=metric, format=".4~g"),
                                                            field("train_energy_j", title="J", format=".4~g")]
    front = [{"filter": "datum.pareto"}]
    spec = {"title": f"{f.task} / {f.preset}: {metric} against training energy "
                     "(ringed and labelled: Pareto front; click a point for its run)",
            "height": 420, "layer": [
                {"mark": {"type": "point", "filled": True, "size": 60, "cursor": "pointer"},
                 "encoding": {"x": x, "y": y, "color": field("method", "nominal"),
                              "shape": field("estimated", "nominal", "energy estimated"),
                              "tooltip": tooltip, "href": field("detail", "nominal")}},
                {"transform": front, "mark": {"type": "line", "color": "#555", "strokeDash": [4, 3]},
                 "encoding": {"x": x, "y": y, "detail": field("estimated", "nominal"),
                              "order": field("train_energy_j")}},
                {"name": "front_ring", "transform": front,
                 "mark": {"type": "point", "filled": False, "size": 320, "strokeWidth": 2.5, "color": "#111"},
                 "encoding": {"x": x, "y": y, "tooltip": tooltip, "href": field("detail", "nominal")}},
                {"name": "front_label", "transform": front,
                 "mark": {"type": "text", "align": "left", "dx": 12, "dy": -10, "fontSize": 11, "color": "#111"},
                 "encoding": {"x": x, "y": y, "text": field("label", "nominal")}}]}
    show_chart(points, spec, "pareto", f"{stem(f)}-pareto")


def curves_view(root: str, f: Filters) -> None:
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
                                         field("step"), field(x, format=".4~g"), field("value", format=".4~g")]}}
        show_chart(curves.drop(columns=["metrics_json"]), spec, f"curve-{x}", f"{stem(f)}-curve-{x}")


def run_view(root: str, f: Filters) -> None:
    runs = query(root, "run_list", replace(f, statuses=()), 500)
    keys = runs["run_key"].tolist()
    linked = st.query_params.get("run")
    if linked and linked not in keys and query(root, "run", None, linked) is not None:
        keys.insert(0, linked)  # a link from the chart names a run outside the newest 500
    if not keys:
        st.info("No runs.")
        return
    labels = {k: f"{m} · {model} · seed {s} · {st_} · {k}" for k, m, model, s, st_ in
              runs[["run_key", "method", "model", "seed", "status"]].itertuples(index=False)}
    from_url("run_key", keys)
    key = st.selectbox("Run (newest 500 matching the filters, any status)", keys, key="run_key",
                       format_func=lambda k: labels.get(k, k))
    row = query(root, "run", None, key)
    if row is None:
        st.info("That run is no longer in the store.")
        return
    run_detail(root, key, row)


def run_detail(root: str, key: str, row: dict) -> None:
    if row.get("error"):
        st.error(f"{row['status']}: {row['error']}")
        if row.get("traceback"):
            st.code(row["traceback"])
    differs = key_params(row.get("task"), row.get("preset"), row.get("method") or "", row.get("method_params"),
                         row.get("task_params"))
    st.markdown(f"**{row.get('method')}** on {row.get('task')}/{row.get('preset')} · model {row.get('model')} · "
                f"seed {row.get('seed')} · {differs or 'defaults'}")
    phases = pd.DataFrame({
        "phase": ["setup", "train", "eval", "total"],
        "seconds": [row.get("setup_s"), row.get("train_s"), row.get("eval_s"), row.get("wall_s")],
        "joules": [row.get("setup_energy_j"), row.get("train_energy_j"), row.get("eval_energy_j"),
                   row.get("total_energy_j")]})
    st.subheader("Energy per phase" + (" (estimated)" if row.get("estimated") else ""))
    columns = [Column("phase", "phase"), Column("seconds", "time", "s"), Column("joules", "energy", "J")]
    st.html(to_html(shown(phases, columns), test_id="phases"))
    parts = pd.DataFrame({"part": ["cpu", "gpu", "dram"],
                          "joules": [row.get(f"train_energy_{p}_j") for p in ("cpu", "gpu", "dram")],
                          "source": [row.get(f"energy_{p}_source") for p in ("cpu", "gpu", "dram")]})
    columns = [Column("part", "part"), Column("joules", "train energy", "J"), Column("source", "source")]
    st.html(to_html(shown(parts, columns), test_id="parts"))
    st.caption(f"energy source: {fmt(row.get('energy_source'))}; notes: {fmt(row.get('energy_notes'))}; "
               f"CO2 {fmt(row.get('co2_g'))} g at {fmt(row.get('carbon_intensity_g_per_kwh'))} g/kWh "
               f"({fmt(row.get('carbon_source'))})")
    st.caption(f"training used {fmt(row.get('train_cpu_s'))} CPU seconds in {fmt(row.get('train_s'))} s; "
               f"machine load at the end {fmt(row.get('host_load_1m'))} on {fmt(row.get('cpu_count'))} cores "
               "(times taken beside other work run longer)")
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
    shown_keys = ("harness_version", "git_commit", "code_hash", "key_scheme", "hardware_class", "hardware_flag",
                  "host", "device", "cpu_model", "cpu_count", "gpu_model", "world_size", "nodes", "slurm_job_id",
                  "campaign", "parent_key", "python_version", "torch_version", "numpy_version", "started_at",
                  "finished_at")
    st.json({k: None if pd.isna(row.get(k)) else str(row.get(k)) for k in shown_keys if k in row}, expanded=True)


VIEWS = {"ranking": ("Ranking", ranking_view), "pareto": ("Pareto front", pareto_view),
         "curves": ("Learning curves", curves_view), "scaling": ("Scaling", scaling_view.render),
         "run": ("Run detail", run_view)}


def render(root: str) -> None:
    f = sidebar(root)
    from_url("tab", list(VIEWS))
    st.subheader(f"Task {f.task}, preset {f.preset}")
    tab = st.radio("View", list(VIEWS), format_func=lambda v: VIEWS[v][0], horizontal=True, key="tab",
                   label_visibility="collapsed")
    VIEWS[tab][1](root, f)  # before the address is rewritten: the run view reads ``run`` from it
    run = st.session_state.get("run_key") if tab == "run" else None
    to_url(task=f.task, preset=f.preset, tab=tab if tab != "ranking" else None, run=run)
