"""Importing a perun report's energy into the run rows it covered.

perun is not installed here and this machine has no energy sensor, so no real perun report with
energy can be produced. THE REPORT BELOW IS HAND-WRITTEN, following the JSON layout of perun's
``DataNode.toDict`` (perun/data_model/data.py: ``id``, ``type`` = NodeType value, ``metadata``,
``metrics`` {name: {type, value, metric_md{unit, mag, …}, agg}}, ``nodes`` written as a one-element
list holding the child mapping). Its numbers are made up for the test; they are no measurement.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from joulebench.cluster.perun import import_report, read_report
from joulebench.harness.params import SpecError
from joulebench.harness.store import Store

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


def metric(name: str, value: float, unit: str, mag: float = 1.0) -> dict:
    md = {"unit": unit, "mag": mag, "dtype": "float32", "min": 0, "max": 1e30, "fill": -1}
    return {"type": name, "value": value, "metric_md": md, "agg": "sum"}


def node(id_: str, type_: int, metrics: dict, children: list[dict] | None = None, **meta) -> dict:
    return {"id": id_, "type": type_, "metadata": meta, "metrics": metrics, "regions": None,
            "deviceType": None, "processed": True,
            "nodes": [{c["id"]: c for c in (children or [])}]}


def hand_written_report(energy_kj: float | None) -> dict:
    """APP → MULTI_RUN → RUN (100 s from T0) → two hosts, energy in kJ (mag 1e3)."""
    run_metrics = {"runtime": metric("runtime", 100.0, "s")}
    if energy_kj is not None:
        run_metrics.update(energy=metric("energy", energy_kj, "J", 1e3),
                           cpu_energy=metric("cpu_energy", energy_kj * 0.75, "J", 1e3))
    hosts = [node(h, 4, {"runtime": metric("runtime", 100.0, "s")}) for h in ("hkn0001", "hkn0002")]
    run = node(T0.isoformat(), 3, run_metrics, hosts)
    return node("app", 1, {}, [node("0", 2, {}, [run])])


def write_row(store: Store, key: str, start_s: float, end_s: float, world_size: int) -> None:
    store.write_run({"run_key": key, "task": "ltsf", "method": "backprop", "status": "ok",
                     "started_at": T0 + timedelta(seconds=start_s),
                     "finished_at": T0 + timedelta(seconds=end_s), "world_size": world_size})


def test_perun_energy_is_shared_by_device_time(tmp_path: Path) -> None:
    report = tmp_path / "perun.json"
    report.write_text(json.dumps(hand_written_report(energy_kj=12.0)))
    runs = read_report(report)
    assert len(runs) == 1 and runs[0].energy_j["energy"] == pytest.approx(12_000.0)
    assert runs[0].hosts == ["hkn0001", "hkn0002"] and runs[0].runtime_s == 100.0

    store = Store(tmp_path / "results")
    write_row(store, "a", 0, 40, 1)     # 40 device-seconds inside the window
    write_row(store, "b", 40, 80, 2)    # 80 device-seconds (2 ranks)
    write_row(store, "c", 200, 260, 1)  # outside: untouched
    entries = import_report(report, store.root)
    assert {e["run_key"]: round(e["energy_j"], 6) for e in entries} == {"a": 4000.0, "b": 8000.0}
    rows = dict(Store(store.root).execute("SELECT run_key, x_perun_energy_j FROM runs").fetchall())
    assert rows["a"] == pytest.approx(4000.0) and rows["b"] == pytest.approx(8000.0) and rows["c"] is None
    import_report(report, store.root)  # importing again replaces, never adds
    again = Store(store.root).execute("SELECT sum(x_perun_energy_j), count(*) FROM runs").fetchone()
    assert again == (pytest.approx(12_000.0), 3)


def test_perun_report_without_energy_imports_nothing(tmp_path: Path) -> None:
    report = tmp_path / "perun.json"
    report.write_text(json.dumps(hand_written_report(energy_kj=None)))  # perun without sensors
    store = Store(tmp_path / "results")
    write_row(store, "a", 0, 40, 1)
    assert import_report(report, store.root) == []


def test_not_a_perun_report_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"id": "app", "type": 1, "nodes": [{}]}')
    with pytest.raises(SpecError, match="no perun run"):
        read_report(bad)
