"""``joulebench check FILE.py``: the gate a new method passes before it is submitted.

The plugin is loaded into the registry, then run on the ``tiny`` preset of every task it says it
can serve, each run in its own worker with a throw-away store. A task passes when the run ends
``ok`` with a finite primary metric, counted samples and at least one step. A method also fails
when it declares a parameter that none of its runs read: such a parameter would enter the
run_key, the columns and searches, and change nothing.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterable
from pathlib import Path

from joulebench.harness.method import Method
from joulebench.harness.registry import registry
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.worker import Worker


def verdict(summary: dict) -> str | None:
    """Why a finished run fails the contract, or None."""
    if summary["status"] != "ok":
        return f"status {summary['status']}: {summary.get('error')}"
    value = summary.get("primary_value")
    if value is None or not math.isfinite(value):
        return f"primary metric is {value}"
    if not summary.get("samples"):
        return "no samples counted: draw training data through ctx.batches()"
    if not summary.get("gradient_updates"):
        return "no updates counted: call ctx.step(loss) once per update"
    return None


def params_read(summary: dict) -> set[str]:
    return set(json.loads(summary.get("params_read") or "{}").get("method", []))


def check_plugin(path: Path, region: str | None = None, only_tasks: Iterable[str] | None = None) -> int:
    reg = registry([str(path)])
    origin = str(Path(path).resolve())
    problems = {k: v for k, v in reg.errors.items() if k.startswith(origin)}
    methods = [cls for cls, o in reg.origins.items() if o == origin and issubclass(cls, Method)]
    for where, why in problems.items():
        print(f"FAIL load {where}: {why}")
    if not methods:
        print(f"FAIL {path}: no method registered" if not problems else "")
        return 1
    failed = bool(problems)
    with tempfile.TemporaryDirectory(prefix="joulebench-check-") as tmp:
        with Worker(Path(tmp), [str(path)], region) as worker:
            for method in methods:
                read: set[str] = set()
                applied: set[str] = set()
                for task_name, task in sorted(reg.tasks.items()):
                    if "tiny" not in task.presets or only_tasks is not None and task_name not in only_tasks:
                        continue
                    try:
                        spec = resolve(RunSpec(task=task_name, method=method.name, preset="tiny"))
                    except ValueError as exc:
                        print(f"SKIP {method.name} on {task_name}: {exc}")
                        continue
                    summary = worker.run(spec)
                    read |= params_read(summary)
                    applied |= set(json.loads(summary.get("method_params") or "{}"))
                    why = verdict(summary)
                    if why:
                        failed = True
                        print(f"FAIL {method.name} on {task_name}: {why}")
                    else:
                        print(f"PASS {method.name} on {task_name}: {summary['primary_metric']}="
                              f"{summary['primary_value']:.4g} in {summary['train_s']:.2f} s")
                unread = sorted(applied - read)  # a parameter whose `applies` never held is not judged
                if unread:
                    failed = True
                    print(f"FAIL {method.name}: declares parameters that no run read; it never reads: "
                          f"{', '.join(unread)} (read them, give them an `applies` condition, or remove them)")
    return 1 if failed else 0
