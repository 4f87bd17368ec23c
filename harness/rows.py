"""The columns every attempt's row starts with, known before anything runs.

Kept apart from the runner because drivers write rows too (a worker that crashed or timed out, a
run refused before it started) and must not import torch for it: the campaign driver did, ~1.5 s
and ~700 MB at every start, competing with its own workers for the cores.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from joulebench.harness import identity
from joulebench.harness.provenance import provenance
from joulebench.harness.registry import registry
from joulebench.harness.spec import ResolvedSpec


def now_utc() -> datetime:
    return datetime.now(UTC)


def base_row(spec: ResolvedSpec, started: datetime, attempt_id: str) -> dict[str, Any]:
    """Identity and provenance columns, known before anything runs (used for failure rows too)."""
    task_info = registry().task_info(spec.task)  # declarations: a driver's failure row imports no torch
    row: dict[str, Any] = {
        "run_key": spec.run_key, "parent_key": spec.parent_key, "attempt_id": attempt_id,
        "cell_key": spec.cell_key, "lineage_key": spec.lineage_key, "key_scheme": spec.identity()["key_scheme"],
        "code_hash": spec.code_hash, "data_fingerprint": spec.data_fingerprint,
        "hardware_class": spec.hardware_class,
        "hardware_flag": identity.hardware_flag(spec.hardware_class, spec.device, spec.world_size),
        "campaign": spec.campaign, "timeout_s": spec.timeout_s,
        "task": spec.task, "method": spec.method, "model": str(spec.task_params.get("model", spec.task)),
        "preset": spec.preset, "seed": spec.seed,
        "task_params": json.dumps(spec.task_params, sort_keys=True),
        "method_params": json.dumps(spec.method_params, sort_keys=True),
        "spec_json": spec.canonical(),
        "budget_steps": spec.budget.steps, "budget_epochs": spec.budget.epochs,
        "budget_seconds": spec.budget.seconds,
        "primary_metric": task_info.primary_metric, "higher_is_better": task_info.higher_is_better(),
        "target": task_info.presets[spec.preset].target,
        "device": spec.device, "world_size": spec.world_size,
        "started_at": started, **provenance(spec.device),
    }
    for name, value in {**spec.task_params, **spec.method_params}.items():
        if value is not None:
            row[f"p_{name}"] = value
    return row


def failure_row(spec: ResolvedSpec, status: str, error: str, started: datetime, attempt_id: str,
                wall_s: float | None = None) -> dict[str, Any]:
    """A row for a run that died outside the runner (crashed or killed worker, timeout)."""
    return {**base_row(spec, started, attempt_id), "status": status, "error": error, "wall_s": wall_s,
            "finished_at": now_utc()}
