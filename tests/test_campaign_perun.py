"""perun reports into the rows of the runs they covered.

The first test runs real ``perun monitor`` (the ``perun`` extra) around a tiny campaign here and
imports what it wrote. This machine has no energy sensor, so perun reports runtime but no energy;
to check the joules that test inserts an ``energy`` metric into the real report's rounds, as perun
writes it on a host with RAPL (said where it is done). The other reports are written by hand in
the layout of the real ones (APP → MULTI_RUN with ``execution_dt`` → RUN rounds "0", "1" → NODE
hosts); their numbers are made up for the tests and are no measurement.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from joulebench.cluster.perun import import_report, read_report, windows
from joulebench.harness.params import SpecError
from joulebench.harness.store import Store

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
VENV_BIN = Path(sys.executable).parent


def metric(name: str, value: float, unit: str, mag: float = 1.0) -> dict:
    md = {"unit": unit, "mag": mag, "dtype": "float32", "min": 0, "max": 1e30, "fill": -1}
    return {"type": name, "value": value, "metric_md": md, "agg": "sum"}


def node(id_: str, type_: int, metrics: dict, children: list[dict] | None = None, **meta) -> dict:
    return {"id": id_, "type": type_, "metadata": meta, "metrics": metrics, "regions": None,
            "deviceType": None, "processed": True,
            "nodes": [{c["id"]: c for c in (children or [])}]}


def report(start: datetime, rounds: list[tuple[float, float | None]], hosts: tuple[str, ...] = ("vm",)) -> dict:
    """A perun report of one monitored call: rounds of (runtime s, energy kJ or None)."""
    runs = []
    for i, (runtime, energy_kj) in enumerate(rounds):
        m = {"runtime": metric("runtime", runtime, "s")}
        if energy_kj is not None:
            m["energy"] = metric("energy", energy_kj, "J", 1e3)
        runs.append(node(str(i), 3, m, [node(h, 4, {"runtime": metric("runtime", runtime, "s")}) for h in hosts]))
    local = start.astimezone().replace(tzinfo=None).isoformat()  # perun writes local time, no zone
    return node("joulebench", 1, {}, [node(local, 2, {}, runs, execution_dt=local)])


def write_row(store: Store, key: str, start_s: float, end_s: float, world_size: int, host: str = "vm") -> None:
    store.write_run({"run_key": key, "task": "ltsf", "method": "backprop", "status": "ok", "host": host,
                     "started_at": T0 + timedelta(seconds=start_s),
                     "finished_at": T0 + timedelta(seconds=end_s), "world_size": world_size})


def stored(root: Path) -> dict[str, tuple]:
    rows = Store(root).execute("SELECT run_key, x_perun_run_id, x_perun_seconds, x_perun_energy_j FROM runs")
    return {r[0]: r[1:] for r in rows.fetchall()}


@pytest.mark.slow
@pytest.mark.perun
def test_real_perun_report_of_a_tiny_campaign_is_imported_into_its_rows(tmp_path: Path) -> None:
    perun = shutil.which("perun", path=str(VENV_BIN)) or shutil.which("perun")
    if perun is None:
        pytest.skip("perun is not installed (pip install -e '.[perun]')")
    (tmp_path / "tiny.toml").write_text('name = "perun-tiny"\n[defaults]\npreset = "tiny"\nseeds = [0, 1]\n'
                                        'budget = { steps = 3 }\n[[grid]]\ntask = "ltsf"\nmethods = ["backprop"]\n')
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    done = subprocess.run([perun, "-l", "ERROR", "monitor", "--format", "json", "--rounds", "2", "-b",
                           "joulebench", "campaign", "run", "tiny.toml", "--results", "r"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    print(f"perun around the tiny campaign: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    assert done.returncode == 0 and "2 ok, 0 not ok" in done.stdout, done.stdout + done.stderr
    path = tmp_path / "perun_results" / "joulebench.json"
    first, second = read_report(path)  # round 2 finds the campaign stored and runs nothing
    assert (first.round, second.round) == (0, 1) and first.run_id != second.run_id
    assert first.hosts == second.hosts and second.start == first.end
    assert first.energy_j == {}  # no sensor here: runtime only

    results = tmp_path / "r"
    found = import_report(path, results)
    rows = Store(results).execute("SELECT run_key, started_at, finished_at FROM runs").fetchall()
    assert {w.run.run_id: len(w.seconds) for w in found} == {first.run_id: 2, second.run_id: 0}
    for key, started, finished in rows:  # the runs ran one after the other: each had the host alone
        run_id, seconds, joules = stored(results)[key]
        assert run_id == first.run_id and joules is None
        assert seconds == pytest.approx((finished - started).total_seconds(), abs=1e-3)
    assert found[0].idle_s + sum(found[0].seconds.values()) == pytest.approx(first.runtime_s)
    assert found[1].idle_s == pytest.approx(second.runtime_s)

    # perun on a host with RAPL writes an energy metric on each round; insert one (made up: 2 kJ)
    # into this real report to check that the runs get only the joules of their own seconds
    text = json.loads(path.read_text())
    multi = next(iter(text["nodes"][0].values()))
    for rnd in multi["nodes"][0].values():
        rnd["metrics"]["energy"] = metric("energy", 2.0, "J", 1e3)
    path.write_text(json.dumps(text))
    found = import_report(path, results)
    charged = {k: v[2] for k, v in stored(results).items()}
    window = found[0]
    assert sum(charged.values()) + window.joules(window.idle_s) == pytest.approx(2000.0)
    assert all(j == pytest.approx(2000.0 * window.seconds[k] / first.runtime_s) for k, j in charged.items())


def test_runs_are_charged_their_own_seconds_shared_by_world_size(tmp_path: Path) -> None:
    path = tmp_path / "perun.json"
    path.write_text(json.dumps(report(T0, [(100.0, 12.0)])))  # 12 kJ over 100 s: 120 W
    store = Store(tmp_path / "results")
    write_row(store, "a", 0, 40, 1)
    write_row(store, "e", 20, 40, 1)            # beside a for 20 s: they share those seconds
    write_row(store, "b", 40, 80, 2)
    write_row(store, "c", 200, 260, 1)          # after the window
    write_row(store, "d", 0, 100, 1, host="other")  # another host: not measured by this perun
    (window,) = import_report(path, store.root)
    joules = {k: v[2] for k, v in stored(store.root).items()}
    assert joules == {"a": pytest.approx(3600.0), "e": pytest.approx(1200.0), "b": pytest.approx(4800.0),
                      "c": None, "d": None}
    assert window.idle_s == pytest.approx(20.0) and window.joules(window.idle_s) == pytest.approx(2400.0)
    import_report(path, store.root)  # importing again replaces, never adds
    assert Store(store.root).execute("SELECT sum(x_perun_energy_j), count(*) FROM runs").fetchall() == [
        (pytest.approx(9600.0), 5)]


def test_rounds_follow_each_other_and_each_host_counts_once(tmp_path: Path) -> None:
    path = tmp_path / "two_rounds.json"
    path.write_text(json.dumps(report(T0, [(30.0, 3.0), (50.0, 5.0)])))
    first, second = read_report(path)
    assert first.start == T0 and second.start == T0 + timedelta(seconds=30)
    assert first.run_id == f"vm@{T0.isoformat()}" and second.run_id == f"vm@{second.start.isoformat()}"
    # one perun per rank on one host: two reports of the same host and time
    twin = tmp_path / "rank1.json"
    twin.write_text(json.dumps(report(T0 + timedelta(seconds=0.2), [(29.0, 2.9)])))
    store = Store(tmp_path / "results")
    write_row(store, "a", 5, 25, 2)
    found = windows([path, twin], store)
    assert [w.duplicate_of for w in found] == [None, first.run_id, None]
    assert import_report([path, twin], store.root)
    assert stored(store.root)["a"][2] == pytest.approx(3000.0 * 20 / 30)


def test_not_a_perun_report_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"id": "app", "type": 1, "nodes": [{}]}')
    with pytest.raises(SpecError, match="no perun run"):
        read_report(bad)
    no_start = tmp_path / "y.json"
    no_start.write_text(json.dumps(node("app", 1, {}, [node("x", 2, {}, [])])))
    with pytest.raises(SpecError, match="no start time"):
        read_report(no_start)
