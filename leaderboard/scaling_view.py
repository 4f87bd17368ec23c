"""The task page's scaling view: energy against device-hours, and throughput per device-hour, by
device count and global batch."""

from __future__ import annotations

import streamlit as st

from joulebench.leaderboard.charts import field, show_chart
from joulebench.leaderboard.queries import Filters
from joulebench.leaderboard.state import query


def stem(f: Filters) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{f.task}-{f.preset}")


def render(root: str, f: Filters) -> None:
    rows = query(root, "scaling", f)
    if rows.empty or rows["world_size"].nunique() < 2 and rows["global_batch"].nunique() < 2:
        st.info("A scaling view needs runs with several device counts or batch sizes "
                "(see examples/campaigns/scaling.toml).")
        return
    tooltip = [field("run_key", "nominal"), field("method", "nominal")] + [
        field(c, format=".3~s") for c in ("world_size", "local_batch", "global_batch", "samples_per_device_hour",
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


def scaling_fits(rows) -> None:
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
