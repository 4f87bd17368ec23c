"""What every page of the app shares: the store, its cached queries and the page's address.

Every view is linkable: the address carries the page's state (``?task=ltsf&preset=small&tab=pareto``,
``&run=KEY`` for a run's detail); a page reads it once per browser session into the widgets' state
and writes the widgets' state back after each change.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

import streamlit as st

from joulebench.leaderboard.queries import Board, Filters

TTL_S = 10
URL_KEYS = {"page": "page", "task": "task", "preset": "preset", "tab": "tab", "run": "run_key"}
"""Address parameter -> widget key."""


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


def from_url(key: str, options: Sequence | None = None) -> None:
    """Before a widget is made: take its value from the address on the session's first run (only
    a value the widget offers; a stale link falls back to the default)."""
    url_name = next(u for u, k in URL_KEYS.items() if k == key)
    seen = st.session_state.setdefault("_url_read", set())
    if key in seen:
        return
    seen.add(key)
    value = st.query_params.get(url_name)
    if value is not None and (options is None or value in options):
        st.session_state[key] = value


def to_url(**values: object) -> None:
    """Make the address name this view (empty values leave the parameter out)."""
    wanted = {k: str(v) for k, v in values.items() if v not in (None, "")}
    if dict(st.query_params) != wanted:
        st.query_params.from_dict(wanted)


def link(**values: object) -> str:
    """A relative address of a view, for links in tables and charts."""
    return "?" + urlencode({k: str(v) for k, v in values.items() if v not in (None, "")})
