"""The landing page: across every task and preset, the best quality, the method that reaches the
task's target for the fewest joules, and backprop's figures beside them; estimated and measured
energy in separate tables, each line leading to the task's page."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from joulebench.leaderboard.state import link, query, to_url
from joulebench.leaderboard.tables import Column, shown, to_html

COLUMNS = [
    Column("task", "task"), Column("preset", "preset"), Column("metric_shown", "metric"),
    Column("target", "target", "number", "the validation value that counts as reached (the task's preset)"),
    Column("best_quality", "best median", "number", "the best median quality over seeds of any cell"),
    Column("best_by", "reached by"),
    Column("cheapest_energy_to_target_j", "fewest joules to target", "J",
           "the median energy to target of the cheapest cell that reached the target in at least half its seeds"),
    Column("cheapest_by", "spent by"),
    Column("cheapest_vs_backprop", "vs backprop", "ratio", "its energy to target over backprop's"),
    Column("backprop_quality", "backprop median", "number"),
    Column("backprop_energy_to_target_j", "backprop to target", "J"),
    Column("cells", "cells", "number", "configurations (method, model, parameters) with successful runs"),
    Column("runs", "runs", "number"),
]


def overview_table(rows: pd.DataFrame) -> tuple[str, list[str]]:
    """The HTML of one table of the overview and the task links in it."""
    rows = rows.assign(
        metric_shown=[f"{m} ({'higher' if h else 'lower'} is better)" if isinstance(m, str) else "no successful run"
                      for m, h in zip(rows.get("metric", [None] * len(rows)), rows.get("higher_is_better",
                                                                                     [None] * len(rows)))],
        cheapest_vs_backprop=rows["cheapest_energy_to_target_j"] / rows["backprop_energy_to_target_j"]
        if "cheapest_energy_to_target_j" in rows else None)
    links = [link(task=t, preset=p) for t, p in zip(rows["task"], rows["preset"])]
    return to_html(shown(rows, COLUMNS), COLUMNS, links=links, test_id="overview"), links


def render(root: str) -> None:
    to_url()
    st.header("Overview: which method reaches each task's target for the fewest joules?")
    table = query(root, "overview")
    measured = table[table["estimated"].eq(False)]
    estimated = table[table["estimated"].ne(False)]  # estimated, and tasks without a successful run
    if not measured.empty:
        st.subheader("Measured energy")
        st.html(overview_table(measured)[0])
    st.subheader("Estimated energy" if measured.empty else "Estimated energy (compare only with estimates)")
    if estimated.empty:
        st.info("No task has runs with estimated energy.")
    else:
        st.html(overview_table(estimated)[0])
    st.caption("Each line leads to the task's page. Medians over seeds of the newest code version; "
               "a cell reaches the target when at least half of its seeds did. Estimated energy comes from "
               "a model (no sensor was readable here): where it is proportional to time, a ranking by "
               "joules is a ranking by seconds.")
