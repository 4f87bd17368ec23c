"""Vega-Lite charts of the app as plain specs (Altair's schema checks cost ~30 ms a chart), with
PNG / SVG export on request."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st


def field(name: str, kind: str = "quantitative", title: str | None = None, **extra) -> dict:
    return {"field": name, "type": kind, "title": name if title is None else title, **extra}


def show_chart(data: pd.DataFrame, spec: dict, key: str, export: str | None = None) -> None:
    """Draw a Vega-Lite spec over ``data``."""
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
