"""A campaign's results as one Markdown table: a line per cell, seeds aggregated.

A cell is one experiment key without the seed (``cell_key``): runs that share task, preset,
parameters, budget, world size, code and hardware class; its label names the parameters that vary
within the campaign, and budget and hardware class are columns, so unlike runs never share a line. Each figure is the median over the cell's successful runs
with the min–max range beside it, because three seeds on a noisy machine are not a mean ± std.
Energy columns say whether their figures are estimates, so a reader never takes a model's number
for a sensor's; where a cell holds both kinds it gets a line per kind (never a shared median).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from joulebench.harness.spec import ResolvedSpec

OPTIONAL_COLUMNS = (
    ("x_ab_bytes_ratio", "AB/DDP all-reduce bytes", ".3f"),
    ("x_ab_ring_ratio", "AB/DDP ring bytes", ".3f"),
)


def spread(values: pd.Series, fmt: str) -> str:
    """Median [min–max] of the non-missing values; a dash when there are none."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "–"
    low, mid, high = (format(v, fmt) for v in (values.min(), values.median(), values.max()))
    return mid if low == high else f"{mid} [{low}–{high}]"


def _varied(specs: Sequence[ResolvedSpec], attr: str) -> list[str]:
    seen: dict[str, set[str]] = {}
    for s in specs:
        for k, v in getattr(s, attr).items():
            seen.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    return sorted(k for k, v in seen.items() if len(v) > 1)


def cell_labels(specs: Sequence[ResolvedSpec]) -> dict[str, str]:
    """run_key → the cell's label: method plus the task parameters that vary within the campaign
    and the method parameters that vary between runs of that method."""
    t_varied = _varied(specs, "task_params")
    m_varied = {m: _varied([s for s in specs if s.method == m], "method_params")
                for m in {s.method for s in specs}}
    out = {}
    for s in specs:
        parts = [f"{k}={s.task_params[k]}" for k in t_varied if k in s.task_params]
        parts += [f"{k}={s.method_params[k]}" for k in m_varied[s.method] if k in s.method_params]
        out[s.run_key] = f"{s.method}" + (f" ({', '.join(parts)})" if parts else "")
    return out


def budget_label(row: pd.Series) -> str:
    """"60 steps", "3 epochs", "20 s": the limits a run's budget set."""
    parts = []
    for column, unit in (("budget_steps", "steps"), ("budget_epochs", "epochs"), ("budget_seconds", "s")):
        value = row.get(column)
        if value is not None and not pd.isna(value):
            parts.append(f"{float(value):g} {unit}")
    return ", ".join(parts) or "–"


def trainable(rows: pd.DataFrame) -> pd.Series:
    """Trainable parameters a method ends with (low-rank methods report theirs per rank)."""
    own = pd.to_numeric(rows.get("x_trainable_params"), errors="coerce") if "x_trainable_params" in rows else None
    base = pd.to_numeric(rows["n_trainable_params"], errors="coerce")
    return own.fillna(base) if own is not None else base


def energy_kinds(rows: pd.DataFrame) -> tuple[pd.Series, str, bool]:
    """Each row's energy kind (a row that does not say counts as an estimate), the joules column's
    header, and whether the kinds mix: then a cell gets one line per kind, never a shared median."""
    kind = rows["energy_estimated"].astype("boolean").fillna(True).map({True: "estimate", False: "measured"})
    mixed = kind.nunique() > 1
    return kind, "train J" if mixed else f"train J ({kind.iloc[0]})", mixed


def markdown_table(rows: pd.DataFrame, labels: dict[str, str]) -> str:
    """One Markdown line per (task, preset, cell, world size, energy kind); order as the campaign
    lists them."""
    if rows.empty:
        return "(no stored runs for this campaign yet)"
    rows = rows.copy()
    rows["cell"] = rows["run_key"].map(labels)
    rows["trainable"] = trainable(rows)
    order = {k: i for i, k in enumerate(labels)}
    rows["order"] = rows["run_key"].map(order)
    extra = [c for c in OPTIONAL_COLUMNS if c[0] in rows and pd.to_numeric(rows[c[0]], errors="coerce").notna().any()]
    metric = rows["primary_metric"].dropna().iloc[0] if rows["primary_metric"].notna().any() else "primary"
    rows["energy"], joules, mixed = energy_kinds(rows)
    head = ["task", "preset", "method", "ranks", "budget", "hardware", "ok/runs", f"test {metric}",
            "trainable params", joules, *(["energy"] if mixed else []), "train s", "samples", "updates"]
    head += [c[1] for c in extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, g in rows.sort_values("order").groupby(["cell_key", "energy"], sort=False):
        ok, first = g[g["status"] == "ok"], g.iloc[0]
        cells = [first["task"], first["preset"], first["cell"], str(int(first["world_size"])),
                 budget_label(first), str(first.get("hardware_class") or "–"), f"{len(ok)}/{len(g)}",
                 spread(ok["primary_value"], ".4f"), spread(ok["trainable"], ",.0f"),
                 spread(ok["train_energy_j"], ",.0f"), *([first["energy"]] if mixed else []),
                 spread(ok["train_s"], ".1f"), spread(ok["samples"], ",.0f"), spread(ok["gradient_updates"], ",.0f")]
        cells += [spread(ok[c[0]], c[2]) for c in extra]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [f"- {r['run_key'][:12]} {r['cell']} seed={r['seed']}: {r['status']}: {r['error']}"
              for _, r in rows[rows["status"] != "ok"].iterrows()]
    return "\n".join(lines + ([""] + failed if failed else []))
