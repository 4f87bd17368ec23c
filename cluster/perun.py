"""Read a perun report back into the rows of the runs it covered.

Usage on a cluster (perun is not a dependency; install it there)::

    perun --format json monitor -m joulebench.harness.cli campaign run demo.toml   # or srun … perun monitor
    joulebench perun-import perun_results/<app>.json --results results

perun's JSON export is a tree of data nodes (``id``, ``type``, ``metadata``, ``metrics``,
``nodes``); node types are perun's ``NodeType`` enum values (1 APP, 2 MULTI_RUN, 3 RUN, 4 NODE,
5 DEVICE_GROUP, 6 SENSOR). A RUN node covers one monitored execution: it starts at its id (an ISO
time stamp) or its metadata's start time and lasts its ``runtime`` metric; its ``energy`` (and
``cpu_energy``/``gpu_energy``/``dram_energy``) metrics are joules × ``metric_md.mag``, summed
over the hosts of the run (perun measures each host once, whatever the number of ranks).

perun measures hosts, not runs: when one perun run covered several joulebench runs, its energy is
shared among them by device-time (overlap of each run with the window × world size). The share is
written as ``x_perun_energy_j`` with ``x_perun_run_id`` and ``x_perun_share`` beside it, so the
apportioning is never hidden; the harness's own ``energy_*`` columns are left as they were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from joulebench.harness.params import SpecError
from joulebench.harness.store import Store, write_atomic

RUN = 3
ENERGY_METRICS = ("energy", "cpu_energy", "gpu_energy", "dram_energy")


@dataclass
class PerunRun:
    run_id: str
    start: datetime
    runtime_s: float
    energy_j: dict[str, float]
    hosts: list[str]

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.runtime_s)


def _children(node: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = node.get("nodes") or {}
    if isinstance(nodes, list):  # perun's toDict wraps the child mapping in a 1-tuple
        merged: dict[str, Any] = {}
        for part in nodes:
            merged.update(part or {})
        nodes = merged
    return list(nodes.values())


def _metric(node: dict[str, Any], name: str) -> float | None:
    metric = (node.get("metrics") or {}).get(name)
    if not isinstance(metric, dict) or metric.get("value") is None:
        return None
    mag = float((metric.get("metric_md") or {}).get("mag", 1.0) or 1.0)
    return float(metric["value"]) * mag


def _start(node: dict[str, Any]) -> datetime | None:
    meta = node.get("metadata") or {}
    for text in (node.get("id"), meta.get("startime"), meta.get("start_time"), meta.get("starttime")):
        try:
            stamp = datetime.fromisoformat(str(text))
        except (TypeError, ValueError):
            continue
        return stamp if stamp.tzinfo else stamp.astimezone(UTC)  # perun writes local time
    return None


def read_report(path: str | Path) -> list[PerunRun]:
    """Every RUN node of a perun JSON report, with its window and energy (joules)."""
    path = Path(path)
    try:
        root = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"perun report {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path} is not a perun JSON report (write it with perun --format json): {exc}") from None
    runs, stack = [], [root]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        if node.get("type") == RUN:
            start, runtime = _start(node), _metric(node, "runtime")
            if start is None or runtime is None:
                raise SpecError(f"perun run {node.get('id')!r} in {path} has no start time or runtime")
            energy = {m: v for m in ENERGY_METRICS if (v := _metric(node, m)) is not None}
            runs.append(PerunRun(str(node.get("id")), start, runtime, energy,
                                 [str(c.get("id")) for c in _children(node)]))
        else:
            stack.extend(_children(node))
    if not runs:
        raise SpecError(f"{path} holds no perun run (no node of type RUN)")
    return sorted(runs, key=lambda r: r.start)


def _as_utc(value: Any) -> datetime:
    stamp = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def import_report(report: str | Path, results: str | Path) -> list[dict[str, Any]]:
    """Write each perun run's energy into the rows of the runs inside its window.

    Returns one entry per updated row (run_key, perun run id, joules, share). Rows of a compacted
    store (no per-run file) are reported with ``updated`` False and left alone."""
    store = Store(Path(results))
    rows = store.execute("SELECT run_key, task, started_at, finished_at, world_size, attempt_id, status "
                         "FROM runs WHERE parent_key IS NULL").fetchall()
    out = []
    for prun in read_report(report):
        total = prun.energy_j.get("energy")
        if total is None:
            continue  # perun without sensors reports no energy: nothing to import
        overlaps = []
        for key, task, started, finished, world_size, attempt, status in rows:
            lo, hi = max(_as_utc(started), prun.start), min(_as_utc(finished), prun.end)
            seconds = (hi - lo).total_seconds()
            if seconds > 0:
                overlaps.append((key, store.attempt_path("runs", task, key, attempt or "", status or ""),
                                 seconds * (world_size or 1)))
        device_s = sum(o[2] for o in overlaps)
        for key, path, weight in overlaps:  # the file of the attempt the runs view shows
            share = weight / device_s
            updated = path.exists()
            if updated:
                table = pq.read_table(path)
                for name, value, typ in (("x_perun_run_id", prun.run_id, pa.string()),
                                         ("x_perun_energy_j", total * share, pa.float64()),
                                         ("x_perun_share", share, pa.float64())):
                    if name in table.column_names:
                        table = table.drop_columns([name])
                    table = table.append_column(pa.field(name, typ), pa.array([value] * len(table), typ))
                write_atomic(table, path)
            out.append({"run_key": key, "perun_run": prun.run_id, "energy_j": total * share,
                        "share": share, "updated": updated})
    return out
