"""The leaderboard's "Suite" tab: a suite's performance profiles, its score table, and each
workload's cells (the runs behind every cost), from the same scoring code as ``joulebench score``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from joulebench.harness.scoring import Scores, profile, score_suite
from joulebench.harness.store import Store
from joulebench.harness.suite import available, load_suite, stale_lines

TRIAL_COLUMNS = ["workload", "entry", "seed", "status", "time_to_target_s", "energy_to_target_j",
                 "primary_value", "train_s", "train_energy_j", "hw", "energy_kind", "run_key"]


def profile_frame(s: Scores, points: int = 200) -> pd.DataFrame:
    """rho(tau) per entry on a grid from 1 to tau_max (drawn as a step line)."""
    taus = np.linspace(1.0, s.tau_max, points)
    parts = [pd.DataFrame({"tau": taus, "rho": profile(s.ratios[e], taus), "entry": f"{e} ({v:.3f})"})
             for e, v in s.scores.items()]
    return pd.concat(parts, ignore_index=True)


def score_table(s: Scores) -> pd.DataFrame:
    table = s.costs.T.copy()
    table = table.map(lambda v: "not reached" if np.isinf(v) else f"{v:,.1f}")
    table.insert(0, f"{s.quantity} score", s.scores.reindex(table.index).round(3))
    return table.sort_values(f"{s.quantity} score", ascending=False)


def suite_tab(root: str, f=None) -> None:
    names = list(available())
    name = st.selectbox("Suite", names, key="suite")
    suite = load_suite(name)
    st.caption(f"{suite.label}: {suite.description}. Cost = median over seeds of train energy/seconds until "
               f"the validation target; score = normalised area under the profile up to τ = "
               f"{suite.scoring.tau_max:g}. Groups never mix hardware classes or estimated with measured energy.")
    for line in stale_lines(suite):
        st.warning(f"Stale target — {line}")
    trials, results = score_suite(Store(Path(root)), suite)
    if not results:
        st.info(f"No stored runs of {suite.label}'s workloads. Run it for a method with\n\n"
                f"    joulebench suite run {suite.name} --method backprop -j 2")
        return
    for i, s in enumerate(results):
        st.markdown(f"**{s.quantity}-to-target — {s.group}**")
        if s.quantity == "energy" and "estimated" in s.group:
            st.caption("Energy here is a codecarbon estimate: its profile follows time, it is not measured.")
        st.vega_lite_chart(profile_frame(s), {
            "mark": {"type": "line", "interpolate": "step-after"},
            "encoding": {"x": {"field": "tau", "type": "quantitative", "title": "τ (× best)",
                               "scale": {"domain": [1, s.tau_max]}},
                         "y": {"field": "rho", "type": "quantitative", "title": "ρ(τ)",
                               "scale": {"domain": [0, 1]}},
                         "color": {"field": "entry", "type": "nominal", "title": "entry (score)"}},
            "width": 600, "height": 260}, key=f"suite-profile-{i}")
        st.dataframe(score_table(s), key=f"suite-scores-{i}")
    st.markdown("**Cells per workload**")
    workload = st.selectbox("Workload", [w.name for w in suite.workloads], key="suite-workload")
    cells = trials[trials["workload"] == workload]
    st.dataframe(cells[[c for c in TRIAL_COLUMNS if c in cells]].sort_values(["entry", "seed"]),
                 hide_index=True, key="suite-cells")
