"""Drift between a stored run and a re-run of its spec: quality, train seconds, joules, provenance.

Used by ``joulebench reproduce`` (any stored row, re-run here) and ``joulebench verify`` (a
sample of a submission bundle's rows). Quality is compared everywhere; time and energy only on
the same hardware class, because another machine is expected to differ in both.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joulebench.harness.cells import code_version, hardware_class
from joulebench.harness.params import SpecError
from joulebench.harness.spec import RunSpec

TOLERANCE = {"quality": 0.01, "train_s": 0.5, "joules": 0.5}
"""Relative drift allowed: quality 1 % (a deterministic CPU run drifts by 0), seconds and joules
50 % (shared machines: seeds of one cell spread by up to 40 % in train seconds here)."""
TIME_FLOOR_S = 0.25
"""Absolute drift in train seconds allowed on top of the relative one. A sub-second run's time is
mostly scheduler and allocator noise on a shared machine: a 0.097 s tiny run re-ran in 0.147 s
(+52 %) under CI load. Joules get the stored run's mean power over the same floor."""
QUANTITIES = (("quality", "primary_value"), ("train_s", "train_s"), ("joules", "train_energy_j"))
PROVENANCE = ("harness_version", "git_commit", "python_version", "torch_version", "numpy_version", "host")


@dataclass
class Drift:
    lines: list[str]
    passed: bool


def spec_from_row(row: dict[str, Any]) -> RunSpec:
    """The RunSpec a stored row was run from: its stored resolved spec, minus what resolution adds.

    A stored spec lists every parameter value, including ones that (under today's declarations)
    do not apply to the run and are errors when set; so only values that differ from what the
    spec resolves to today are passed, in two rounds (a value set in the first, e.g. a model, can
    make more parameters apply)."""
    from joulebench.harness.spec import resolve

    stored = json.loads(row["spec_json"])
    base = {k: v for k, v in stored.items() if k in RunSpec.model_fields}
    wanted = {"task_params": base.pop("task_params", {}) or {}, "method_params": base.pop("method_params", {}) or {}}
    chosen: dict[str, dict[str, Any]] = {"task_params": {}, "method_params": {}}
    for _ in range(2):
        now = resolve(RunSpec.parse({**base, **chosen}))
        for kind in chosen:
            current = getattr(now, kind)
            chosen[kind].update({k: v for k, v in wanted[kind].items() if k in current and current[k] != v})
    return RunSpec.parse({**base, **chosen})


def _relative(old: Any, new: Any) -> float | None:
    if old is None or new is None:
        return None
    old, new = float(old), float(new)
    if math.isnan(old) or math.isnan(new):
        return None
    if old == new:
        return 0.0
    return abs(new - old) / abs(old) if old else math.inf


def _floor(name: str, old: dict[str, Any]) -> float:
    """The absolute drift allowed for one quantity beyond its relative tolerance (see TIME_FLOOR_S)."""
    if name == "train_s":
        return TIME_FLOOR_S
    if name == "joules":
        seconds, joules = old.get("train_s"), old.get("train_energy_j")
        if seconds and joules and not (math.isnan(float(seconds)) or math.isnan(float(joules))):
            return float(joules) / float(seconds) * TIME_FLOOR_S
    return 0.0


def _within(name: str, old: dict[str, Any], column: str, new: dict[str, Any]) -> bool:
    if _relative(old.get(column), new.get(column)) is None:  # missing or NaN on either side
        return False
    before, after = float(old[column]), float(new[column])
    return abs(after - before) <= TOLERANCE[name] * abs(before) + _floor(name, old)


def _tolerance_label(name: str, old: dict[str, Any]) -> str:
    floor = _floor(name, old)
    if not floor:
        return f"{TOLERANCE[name]:.0%}"
    unit = "s" if name == "train_s" else "J"
    return f"{TOLERANCE[name]:.0%}+{floor:.3g} {unit}"


def drift(old: dict[str, Any], new: dict[str, Any]) -> Drift:
    """The drift table of one re-run against its stored row, and whether it is within tolerance:
    relative drift, plus an absolute noise floor for seconds and joules (TIME_FLOOR_S)."""
    same_hw = hardware_class(old) == hardware_class(new)
    metric = old.get("primary_metric") or "quality"
    lines = [f"| {'quantity':<24} | {'stored':>12} | {'now':>12} | {'drift':>9} | {'tolerance':>13} | ok |",
             "|" + "---|" * 6]
    passed = new.get("status") == "ok"
    for name, column in QUANTITIES:
        rel = _relative(old.get(column), new.get(column))
        checked = name == "quality" or same_hw
        ok = _within(name, old, column, new) if checked else None
        passed &= ok is not False
        label = f"{metric} (test)" if name == "quality" else name
        tol = _tolerance_label(name, old) if checked else "not compared"
        lines.append(f"| {label:<24} | {_num(old.get(column)):>12} | {_num(new.get(column)):>12} | "
                     f"{_pct(rel):>9} | {tol:>13} | {'-' if ok is None else ('yes' if ok else 'NO')} |")
    if not same_hw:
        lines.append(f"other hardware ({hardware_class(old)} stored, {hardware_class(new)} here): "
                     "quality only; time and energy are not comparable across hardware classes")
    if new.get("status") != "ok":
        lines.append(f"re-run ended {new.get('status')}: {new.get('error')}")
    return Drift(lines, bool(passed))


def provenance_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between the two runs' code, packages and hardware."""
    out = []
    if code_version(old) != code_version(new):
        out.append(f"code: {code_version(old)} stored, {code_version(new)} now")
    if hardware_class(old) != hardware_class(new):
        out.append(f"hardware: {hardware_class(old)} stored, {hardware_class(new)} now")
    for key in PROVENANCE:
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)} stored, {new.get(key)} now")
    before = json.loads(old.get("packages") or "{}")
    after = json.loads(new.get("packages") or "{}")
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    for name in changed[:20]:
        out.append(f"package {name}: {before.get(name, 'absent')} stored, {after.get(name, 'absent')} now")
    if len(changed) > 20:
        out.append(f"... and {len(changed) - 20} more packages")
    return out or ["provenance: same code, packages and hardware"]


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.6g}"


def _pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.2%}"


def rerun(row: dict[str, Any], plugins: list[str] | None = None) -> dict[str, Any]:
    """Run a stored row's spec again here, in a throw-away store; returns the new full row."""
    from joulebench.harness.registry import registry
    from joulebench.harness.spec import resolve
    from joulebench.harness.store import Store
    from joulebench.harness.worker import Worker

    registry(plugins)
    spec = resolve(spec_from_row(row))
    with tempfile.TemporaryDirectory(prefix="joulebench-rerun-") as tmp:
        with Worker(Path(tmp), plugins) as worker:
            worker.run(spec)
        rows = Store(Path(tmp)).execute("SELECT * FROM runs WHERE run_key = ?", [spec.run_key]).df()
    if rows.empty:
        raise RuntimeError(f"the re-run of {row['run_key']} stored no row")
    return rows.iloc[0].to_dict()


def find_row(results: Path, run_key: str) -> dict[str, Any]:
    """A stored row by its key or a unique prefix of it (one-line error otherwise)."""
    from joulebench.harness.store import Store

    rows = Store(results).execute("SELECT * FROM runs WHERE starts_with(run_key, ?)", [run_key]).df()
    if rows.empty:
        raise SpecError(f"no stored run {run_key!r} in {results}")
    if len(rows) > 1:
        raise SpecError(f"run key prefix {run_key!r} matches {len(rows)} runs; give more characters")
    return rows.iloc[0].to_dict()


def reproduce(run_key: str, results: Path, plugins: list[str] | None = None) -> int:
    old = find_row(results, run_key)
    print(f"reproducing {old['run_key']}: {old['task']}/{old['method']} {old['preset']} seed={old['seed']}",
          flush=True)
    new = rerun(old, plugins)
    result = drift(old, new)
    print("\n".join(result.lines))
    print("\n".join(provenance_diff(old, new)))
    print("within tolerance" if result.passed else "drift beyond tolerance")
    return 0
