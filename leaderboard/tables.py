"""Tables a reader can trust: an HTML table in the page (not a canvas), every column as wide as
its widest text, figures in one unit and scale per column with the full value in the cell's
tooltip.

Streamlit's data grid draws on a canvas and cut right-aligned numbers wider than their column on
the left (225.11 J read as ``25.1142``); the browser lays out a DOM table to fit its text, and a
test can read what it shows.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from joulebench.leaderboard.units import MISSING, fmt, is_missing, percent, ratio, scale_for

STYLE = """<style>
.jb-table {border-collapse: collapse; font-size: 0.85rem; margin-bottom: 0.5rem}
.jb-table th, .jb-table td {white-space: nowrap; padding: 0.2rem 0.6rem; border-bottom: 1px solid #e6e6e6}
.jb-table th {text-align: left; font-weight: 600; background: #f6f6f8; white-space: normal; max-width: 9rem;
              vertical-align: bottom}
.jb-table td.num {text-align: right; font-variant-numeric: tabular-nums}
.jb-table tr.older td {color: #999}
.jb-wrap {overflow-x: auto; max-width: 100%}
</style>"""


@dataclass(frozen=True)
class Column:
    """How one column is shown: its source field, a header, and a kind (``J``, ``s``, ``g CO2``,
    ``h``: one scale for the column; ``ratio``; ``percent``; ``number``; ``text``)."""

    field: str
    header: str
    kind: str = "text"
    help: str = ""


@dataclass(frozen=True)
class Shown:
    """A table as the page shows it: header texts, cell texts and cell tooltips."""

    headers: list[str]
    cells: list[list[str]]
    titles: list[list[str]]
    numeric: list[bool]


def full(value: object, unit: str = "") -> str:
    """The stored value, unrounded, for a tooltip."""
    if is_missing(value):
        return "no value"
    if isinstance(value, float):
        return f"{value!r} {unit}".strip()
    return f"{value} {unit}".strip()


def shown(frame: pd.DataFrame, columns: list[Column]) -> Shown:
    """Format ``frame`` for reading; units and scales go into the headers."""
    headers, cells, titles, numeric = [], [], [], []
    for col in columns:
        values = frame[col.field].tolist() if col.field in frame else [None] * len(frame)
        header, show, unit = col.header, fmt, ""
        if col.kind in ("J", "s", "g CO2", "h"):
            scale = scale_for(values, col.kind)
            header, show, unit = f"{col.header} ({scale.label})", scale.show, {"h": "device-h"}.get(col.kind, col.kind)
        elif col.kind == "ratio":
            show = ratio
        elif col.kind == "percent":
            show = percent
        headers.append(header)
        cells.append([show(v) for v in values])
        titles.append([full(v, unit) for v in values])
        numeric.append(col.kind != "text")
    rows = list(zip(*cells)) if cells else []
    row_titles = list(zip(*titles)) if titles else []
    return Shown(headers, [list(r) for r in rows], [list(t) for t in row_titles], numeric)


def to_html(table: Shown, columns: list[Column], links: list[str | None] | None = None,
            link_column: int = 0, row_class: Callable[[int], str] | None = None, test_id: str = "jb-table") -> str:
    """The table as HTML; ``links`` turn one column's cells into links (one per row or None)."""
    esc = html.escape
    head = "".join(f'<th title="{esc(c.help or h)}">{esc(h)}</th>' for h, c in zip(table.headers, columns))
    body = []
    for i, (cells, titles) in enumerate(zip(table.cells, table.titles)):
        tds = []
        for j, (text, title) in enumerate(zip(cells, titles)):
            inner = esc(text)
            if links and j == link_column and links[i]:
                inner = f'<a href="{esc(links[i])}" target="_self">{inner}</a>'
            css = ' class="num"' if table.numeric[j] and text != MISSING else ""
            tds.append(f'<td{css} title="{esc(title)}">{inner}</td>')
        cls = row_class(i) if row_class else ""
        body.append(f'<tr{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{"".join(tds)}</tr>')
    return (f'{STYLE}<div class="jb-wrap"><table class="jb-table" data-testid="{esc(test_id)}">'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')
