"""The joulebench leaderboard (Streamlit): an overview of every task, then per task its ranking,
Pareto front, learning curves, scaling and runs.

Start it with ``joulebench leaderboard [--results DIR]``; it reads the store named by
``JOULEBENCH_RESULTS`` (or ``--results`` after ``--``) and re-queries every few seconds, so new
runs appear without a restart. The address names the view (``?task=ltsf&preset=small&tab=pareto``);
without one the overview is the landing page. A page is a module with ``render(root)``: adding one
is one line in ``PAGES``.
"""

from __future__ import annotations

import streamlit as st

from joulebench.leaderboard import overview_page, suite_page, task_page
from joulebench.leaderboard.state import from_url, query, results_root

PAGES = {"overview": ("Overview", overview_page.render), "task": ("Task", task_page.render),
         "suite": ("Suite", suite_page.suite_tab)}


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
    if "page" not in st.session_state and "task" in st.query_params and "page" not in st.query_params:
        st.session_state["page"] = "task"  # a link to a task's view
    from_url("page", list(PAGES))
    page = st.sidebar.radio("Page", list(PAGES), format_func=lambda p: PAGES[p][0], key="page")
    PAGES[page][1](root)


main()
