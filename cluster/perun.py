"""Read perun reports back into the rows of the runs they covered.

Usage (perun 1.0.0, the ``perun`` extra; these are the commands that work)::

    perun monitor --format json -b joulebench campaign run demo.toml    # writes perun_results/joulebench.json
    joulebench perun-import perun_results/joulebench.json --results results

or, on SLURM, ``launch_prefix = "perun monitor --format json --data-out DIR/${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} -b"``
in the campaign, which wraps each array task's ``srun`` (one perun per task, on its one node).

perun's JSON export is a tree of data nodes (``id``, ``type``, ``metadata``, ``metrics``,
``nodes``); types are perun's ``NodeType`` values (1 APP, 2 MULTI_RUN, 3 RUN, 4 NODE, 5 DEVICE_GROUP,
6 SENSOR). A MULTI_RUN is one ``perun monitor`` call: its id and ``metadata.execution_dt`` hold the
start (local time). Its RUN children are the rounds (``--rounds``), ids "0", "1", … with no time of
their own: perun runs them back to back, so round k is taken to start where round k-1 ended (the
few seconds perun spends between rounds shift later rounds a little later than that). A round
lasts its ``runtime`` metric; its ``energy`` metrics are joules × ``metric_md.mag`` over its hosts
(NODE children; one monitor per host). Here (no RAPL, hwmon or NVML) perun reports no energy.

Each window gets an id of its hosts and start (``vm@2026-12-01T20:24:12+00:00``): every report
says "0" for its first round. A host measured by two windows at once (a perun per rank) counts
once: the later-read window is dropped. Within a window, a run on one of its hosts is charged the
energy of the seconds it ran, at the window's mean power, shared by world size with the runs
running beside it; seconds when no run ran (start-up, the driver, perun itself) are charged to
no run and reported as idle/overhead. Rows get ``x_perun_run_id``, ``x_perun_seconds`` and
``x_perun_energy_j`` (NULL when perun had no energy); the harness's ``energy_*`` columns stay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from joulebench.harness.params import SpecError
from joulebench.harness.store import Store, write_atomic

MULTI_RUN, RUN, NODE = 2, 3, 4
ENERGY_METRICS = ("energy", "cpu_energy", "gpu_energy", "dram_energy")


@dataclass
class PerunRun:
    """One round of one ``perun monitor`` call: a measured window on its hosts."""

    run_id: str
    round: int
    start: datetime
    runtime_s: float
    energy_j: dict[str, float]
    hosts: list[str]

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.runtime_s)


@dataclass
class Window:
    """What one window charged: seconds and joules per run, and what no run used."""

    run: PerunRun
    seconds: dict[str, float] = field(default_factory=dict)
    idle_s: float = 0.0
    duplicate_of: str | None = None

    def joules(self, seconds: float) -> float | None:
        total = self.run.energy_j.get("energy")
        return None if total is None or self.run.runtime_s <= 0 else total * seconds / self.run.runtime_s


def _children(node: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = node.get("nodes") or {}
    if isinstance(nodes, list):  # perun's toDict wraps the child mapping in a 1-tuple
        merged: dict[str, Any] = {}
        for part in nodes:
            merged.update(part or {})
        nodes = merged
    return [n for n in nodes.values() if isinstance(n, dict)]


def _metric(node: dict[str, Any], name: str) -> float | None:
    metric = (node.get("metrics") or {}).get(name)
    if not isinstance(metric, dict) or metric.get("value") is None:
        return None
    mag = float((metric.get("metric_md") or {}).get("mag", 1.0) or 1.0)
    return float(metric["value"]) * mag


def _stamp(text: Any) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None
    return stamp.astimezone(UTC)  # perun writes local time without a zone


def _start(multi_run: dict[str, Any]) -> datetime | None:
    meta = multi_run.get("metadata") or {}
    for text in (meta.get("execution_dt"), meta.get("output.starttime"), multi_run.get("id")):
        if (stamp := _stamp(text)) is not None:
            return stamp
    return None


def _energy(run: dict[str, Any], hosts: list[dict[str, Any]]) -> dict[str, float]:
    """The round's energy metrics; where the round has none, its hosts' (each host once)."""
    out = {m: v for m in ENERGY_METRICS if (v := _metric(run, m)) is not None}
    for m in ENERGY_METRICS:
        per_host = {str(h.get("id")): v for h in hosts if (v := _metric(h, m)) is not None}
        if m not in out and per_host:
            out[m] = sum(per_host.values())
    return out


def _rounds(multi_run: dict[str, Any], path: Path) -> list[PerunRun]:
    start = _start(multi_run)
    if start is None:
        raise SpecError(f"perun run {multi_run.get('id')!r} in {path} has no start time (execution_dt)")
    runs = sorted((n for n in _children(multi_run) if n.get("type") == RUN),
                  key=lambda n: int(n["id"]) if str(n.get("id")).isdigit() else 0)
    out = []
    for index, run in enumerate(runs):
        runtime = _metric(run, "runtime")
        if runtime is None:
            raise SpecError(f"perun round {run.get('id')!r} of {multi_run.get('id')!r} in {path} has no runtime")
        hosts = [n for n in _children(run) if n.get("type") == NODE]
        names = sorted({str(h.get("id")) for h in hosts})
        run_id = f"{'+'.join(names) or 'unknown'}@{start.isoformat()}"
        out.append(PerunRun(run_id, index, start, runtime, _energy(run, hosts), names))
        start = start + timedelta(seconds=runtime)
    return out


def read_report(path: str | Path) -> list[PerunRun]:
    """Every round of every monitored call in a perun JSON report, with window and energy."""
    path = Path(path)
    try:
        root = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"perun report {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path} is not a perun JSON report (write it with perun monitor --format json): "
                        f"{exc}") from None
    runs, stack = [], [root] if isinstance(root, dict) else []
    while stack:
        node = stack.pop()
        if node.get("type") == MULTI_RUN:
            runs += _rounds(node, path)
        else:
            stack.extend(_children(node))
    if not runs:
        raise SpecError(f"{path} holds no perun run (no node of type MULTI_RUN with rounds)")
    return sorted(runs, key=lambda r: r.start)


def _as_utc(value: Any) -> datetime:
    stamp = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def short_host(name: Any) -> str:
    return str(name or "").split(".")[0]


def charge(run: PerunRun, rows: list[tuple[str, datetime, datetime, int, str]]) -> Window:
    """Split the window into stretches between run starts and ends; each stretch goes to the runs
    running in it on the window's hosts, by world size; a stretch with none is idle/overhead."""
    window = Window(run)
    hosts = {short_host(h) for h in run.hosts}
    inside = [(key, max(s, run.start), min(f, run.end), ws) for key, s, f, ws, host in rows
              if short_host(host) in hosts and min(f, run.end) > max(s, run.start)]
    edges = sorted({run.start, run.end, *(t for _, s, f, _ in inside for t in (s, f))})
    for lo, hi in zip(edges, edges[1:]):
        seconds = (hi - lo).total_seconds()
        active = [(key, ws) for key, s, f, ws in inside if s <= lo and f >= hi]
        weight = sum(ws for _, ws in active)
        if not active:
            window.idle_s += seconds
        for key, ws in active:
            window.seconds[key] = window.seconds.get(key, 0.0) + seconds * ws / weight
    return window


def windows(reports: list[Path], store: Store) -> list[Window]:
    """Every window of the reports, charged to the store's top-level runs; a window whose host was
    already measured over the same time (one perun per rank) is marked duplicate and charges none."""
    rows = [(key, _as_utc(s), _as_utc(f), int(ws or 1), host) for key, s, f, ws, host in store.execute(
        "SELECT run_key, started_at, finished_at, world_size, host FROM runs "
        "WHERE parent_key IS NULL AND started_at IS NOT NULL AND finished_at IS NOT NULL").fetchall()]
    out: list[Window] = []
    for run in sorted((r for p in reports for r in read_report(p)), key=lambda r: r.start):
        twin = next((w for w in out if w.duplicate_of is None and set(w.run.hosts) & set(run.hosts)
                     and w.run.start < run.end and run.start < w.run.end), None)
        out.append(Window(run, duplicate_of=twin.run.run_id) if twin else charge(run, rows))
    return out


def import_report(reports: str | Path | list, results: str | Path) -> list[Window]:
    """Write each run's perun window, seconds and joules into its row (per-run files; rows of a
    compacted store are left alone) and return the windows with what they charged."""
    store = Store(Path(results))
    found = windows([Path(p) for p in (reports if isinstance(reports, list) else [reports])], store)
    per_row: dict[str, list[tuple[Window, float]]] = {}
    for window in found:
        for key, seconds in window.seconds.items():
            per_row.setdefault(key, []).append((window, seconds))
    shown = {key: (task, attempt, status) for key, task, attempt, status in store.execute(
        "SELECT run_key, task, attempt_id, status FROM runs").fetchall()}
    for key, parts in per_row.items():
        joules = [w.joules(s) for w, s in parts]
        values = (("x_perun_run_id", ",".join(w.run.run_id for w, _ in parts), pa.string()),
                  ("x_perun_seconds", sum(s for _, s in parts), pa.float64()),
                  ("x_perun_energy_j", None if None in joules else sum(joules), pa.float64()))
        task, attempt, status = shown[key]  # the file of the attempt the runs view shows
        path = store.attempt_path("runs", task, key, attempt or "", status or "")
        if not path.exists():
            continue
        table = pq.read_table(path)
        for name, value, typ in values:
            if name in table.column_names:
                table = table.drop_columns([name])
            table = table.append_column(pa.field(name, typ), pa.array([value] * len(table), typ))
        write_atomic(table, path)
    return found


def describe(window: Window) -> list[str]:
    """Lines for the import's output: the window, each run's charge, and what no run used."""
    run = window.run
    energy = run.energy_j.get("energy")
    head = (f"perun window {run.run_id} (round {run.round}): {run.runtime_s:.1f} s, "
            + (f"{energy:.1f} J" if energy is not None else "no energy (perun found no sensor)"))
    if window.duplicate_of:
        return [head + f"; same host and time as {window.duplicate_of}: not counted again"]
    lines = [head]
    for key, seconds in sorted(window.seconds.items()):
        joules = window.joules(seconds)
        lines.append(f"  {key}: {seconds:.1f} s" + (f", {joules:.1f} J" if joules is not None else ""))
    idle_j = window.joules(window.idle_s)
    lines.append(f"  idle/overhead (no run): {window.idle_s:.1f} s"
                 + (f", {idle_j:.1f} J" if idle_j is not None else ""))
    return lines
