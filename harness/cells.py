"""A stored row's leaderboard cell and hardware class, read from the schema-v2 identity columns.

Rows written before the runner filled ``cell_key`` / ``hardware_class`` (schema v1, or v2 files of
the transition) get both derived from the columns they do have, so that scoring and forecasting
group every row the same way. When every row carries the v2 columns these functions reduce to a
column read; nothing else in the benchmark code computes a cell or a hardware class.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd

CELL_COLUMNS = ("task", "preset", "method", "task_params", "method_params", "budget_steps",
                "budget_epochs", "budget_seconds", "device", "world_size")


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and pd.isna(value)) and value != ""


def hardware_class(row: dict[str, Any] | pd.Series) -> str:
    """``cpu:<CPU model>`` or ``cuda:<GPU model> x<devices>``: what a time or energy is comparable across."""
    stored = row.get("hardware_class")
    if _present(stored):
        return str(stored)
    if row.get("device") == "cuda" and _present(row.get("gpu_model")):
        return f"cuda:{row.get('gpu_model')} x{int(row.get('world_size') or 1)}"
    return f"cpu:{row.get('cpu_model') or 'unknown'}"


def code_version(row: dict[str, Any] | pd.Series) -> str:
    """The source hash the row was keyed with (v2 ``code_hash``, else the v1 spec's ``source_hash``)."""
    stored = row.get("code_hash")
    if _present(stored):
        return str(stored)
    try:
        return str(json.loads(row.get("spec_json") or "{}").get("source_hash", ""))
    except json.JSONDecodeError:
        return ""


def cell_key(row: dict[str, Any] | pd.Series) -> str:
    """The experiment key minus the seed (one leaderboard cell)."""
    stored = row.get("cell_key")
    if _present(stored):
        return str(stored)
    parts = {c: (None if not _present(row.get(c)) else str(row.get(c))) for c in CELL_COLUMNS}
    parts.update(code=code_version(row), hardware=hardware_class(row))
    return "c1-" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:18]


def energy_kind(row: dict[str, Any] | pd.Series) -> str:
    """``estimated`` or ``measured``: the two are never compared with each other."""
    estimated = row.get("energy_estimated")
    return "measured" if estimated is False or estimated == 0 else "estimated"


def annotate(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``cell``, ``hw`` and ``energy_kind`` columns to a frame of stored rows."""
    frame = frame.copy()
    records = frame.to_dict("records")
    frame["cell"] = [cell_key(r) for r in records]
    frame["hw"] = [hardware_class(r) for r in records]
    frame["energy_kind"] = [energy_kind(r) for r in records]
    return frame
