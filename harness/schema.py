"""Result schema v2: fixed types for the core columns, prefixed columns for what varies per run.

Prefixed columns: ``p_<name>`` (a task or method parameter; numbers as DOUBLE, the rest VARCHAR),
``metric_<name>`` (test metrics), ``val_<name>`` (validation metrics) and ``x_<name>`` (method
statistics such as bytes communicated). Readers union files by column name, so a file written by
an older schema version still reads: its missing columns come back NULL.
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import Any

import pyarrow as pa

from joulebench.harness import SCHEMA_VERSION

TS = pa.timestamp("us", tz="UTC")

RUNS = pa.schema([
    ("schema_version", pa.int32()), ("run_key", pa.string()), ("parent_key", pa.string()),
    # identity (v2): what makes two runs the same experiment, and the attempt of this row
    ("attempt_id", pa.string()), ("cell_key", pa.string()), ("lineage_key", pa.string()),
    ("key_scheme", pa.string()), ("code_hash", pa.string()), ("data_fingerprint", pa.string()),
    ("hardware_class", pa.string()), ("hardware_flag", pa.string()), ("params_read", pa.string()),
    ("campaign", pa.string()), ("timeout_s", pa.float64()), ("task", pa.string()), ("method", pa.string()),
    ("model", pa.string()), ("preset", pa.string()), ("seed", pa.int64()),
    ("task_params", pa.string()), ("method_params", pa.string()), ("spec_json", pa.string()),
    ("budget_steps", pa.int64()), ("budget_epochs", pa.float64()), ("budget_seconds", pa.float64()),
    ("status", pa.string()), ("error", pa.string()), ("traceback", pa.string()),
    ("primary_metric", pa.string()), ("primary_value", pa.float64()),
    ("higher_is_better", pa.bool_()), ("metrics_json", pa.string()),
    ("target", pa.float64()), ("reached_target", pa.bool_()),
    ("time_to_target_s", pa.float64()), ("energy_to_target_j", pa.float64()),
    ("wall_s", pa.float64()), ("setup_s", pa.float64()), ("train_s", pa.float64()),
    ("eval_s", pa.float64()), ("train_cpu_s", pa.float64()), ("host_load_1m", pa.float64()),
    ("setup_energy_j", pa.float64()), ("train_energy_j", pa.float64()),
    ("eval_energy_j", pa.float64()), ("total_energy_j", pa.float64()),
    ("train_energy_cpu_j", pa.float64()), ("train_energy_gpu_j", pa.float64()),
    ("train_energy_dram_j", pa.float64()),
    ("energy_cpu_source", pa.string()), ("energy_gpu_source", pa.string()),
    ("energy_dram_source", pa.string()), ("energy_source", pa.string()),
    ("energy_estimated", pa.bool_()), ("energy_notes", pa.string()),
    ("co2_g", pa.float64()), ("co2_total_g", pa.float64()),
    ("carbon_intensity_g_per_kwh", pa.float64()), ("carbon_region", pa.string()),
    ("carbon_source", pa.string()),
    ("device", pa.string()), ("world_size", pa.int64()), ("nodes", pa.int64()),
    ("device_hours", pa.float64()),
    ("samples", pa.int64()), ("gradient_updates", pa.int64()), ("steps", pa.int64()),
    ("epochs", pa.float64()), ("local_batch", pa.int64()), ("global_batch", pa.int64()),
    ("peak_mem_bytes", pa.int64()), ("peak_mem_source", pa.string()),
    ("n_params", pa.int64()), ("n_trainable_params", pa.int64()), ("extra_json", pa.string()),
    ("harness_version", pa.string()), ("git_commit", pa.string()), ("packages", pa.string()),
    ("python_version", pa.string()), ("torch_version", pa.string()), ("numpy_version", pa.string()),
    ("host", pa.string()), ("cpu_model", pa.string()), ("cpu_count", pa.int64()),
    ("gpu_model", pa.string()), ("slurm_job_id", pa.string()),
    ("slurm_array_job_id", pa.string()), ("slurm_array_task_id", pa.string()),
    ("started_at", TS), ("finished_at", TS),
])

CURVES = pa.schema([
    ("schema_version", pa.int32()), ("run_key", pa.string()), ("attempt_id", pa.string()),
    ("task", pa.string()), ("method", pa.string()), ("run_started_at", TS), ("split", pa.string()),
    ("step", pa.int64()), ("epoch", pa.float64()), ("samples", pa.int64()),
    ("train_s", pa.float64()), ("train_energy_j", pa.float64()), ("metrics_json", pa.string()),
])

V2_RUN_COLUMNS = ("attempt_id", "cell_key", "lineage_key", "key_scheme", "code_hash", "data_fingerprint",
                  "hardware_class", "hardware_flag", "params_read", "timeout_s",
                  "slurm_array_job_id", "slurm_array_task_id")
RUNS_V1 = pa.schema([f for f in RUNS if f.name not in V2_RUN_COLUMNS])
CURVES_V1 = pa.schema([f for f in CURVES if f.name != "attempt_id"])
SCHEMAS: dict[int, dict[str, pa.Schema]] = {1: {"runs": RUNS_V1, "curves": CURVES_V1},
                                            2: {"runs": RUNS, "curves": CURVES}}
"""The core columns of every schema version a reader accepts (prefixed columns come on top)."""

PREFIXES = ("p_", "metric_", "val_", "x_")


class Status(StrEnum):
    """How a run attempt ended; only ``ok`` counts as done."""

    OK = "ok"
    FAILED = "failed"
    DIVERGED = "diverged"
    TIMEOUT = "timeout"
    CRASHED = "crashed"


STATUSES = tuple(s.value for s in Status)


def _dynamic_type(value: Any) -> pa.DataType:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, (int, float)):
        return pa.float64()
    return pa.string()


def _clean(value: Any, typ: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_floating(typ):
        value = float(value)
        return None if math.isnan(value) else value
    if pa.types.is_string(typ) and not isinstance(value, str):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows → an Arrow table with the fixed core schema plus the prefixed dynamic columns."""
    fields = list(schema)
    extra: dict[str, pa.DataType] = {}
    for row in rows:
        for key, value in row.items():
            if key not in schema.names:
                if not key.startswith(PREFIXES):
                    raise KeyError(f"column {key!r} is not in schema v{SCHEMA_VERSION}")
                if value is not None:
                    extra.setdefault(key, _dynamic_type(value))
    for key, typ in sorted(extra.items()):
        fields.append(pa.field(key, typ))
    full = pa.schema(fields)
    columns = {f.name: [_clean(r.get(f.name), f.type) for r in rows] for f in full}
    for row_values in (columns.get("schema_version"),):
        if row_values is not None:
            columns["schema_version"] = [SCHEMA_VERSION for _ in rows]
    return pa.table(columns, schema=full)
