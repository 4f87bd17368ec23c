"""What tells one run apart from its neighbours: the parameters that differ from their defaults.

Five runs of ``ltsf/backprop tiny seed=0`` with five models used to print the same summary line;
the line, the leaderboard's ``key_params`` column and its tooltips now name what differs
(``model=patchtst``), against the defaults the registry declares as the task's preset overrides
them, so a reader never has to open the spec to tell two rows apart.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any


def _loads(params: str | dict | None) -> dict[str, Any]:
    if isinstance(params, dict):
        return params
    return json.loads(params) if isinstance(params, str) and params else {}  # None, or NaN from a frame


@lru_cache(maxsize=4096)
def method_defaults(method: str, task: str | None, preset: str | None) -> dict[str, Any]:
    """The method's declared defaults as the task's preset overrides them for this method."""
    from joulebench.harness.registry import registry

    reg = registry()
    declared = declaration(reg.methods, method)
    defaults = {k: p.default for k, p in declared.params.items()} if declared else {}
    task_info = declaration(reg.tasks, task or "")
    if task_info is not None and preset in task_info.presets:
        defaults.update(task_info.presets[preset].method_defaults.get(method) or {})
    return defaults


def declaration(table, name: str):
    """A plugin's declarations (params, presets) without importing it: the manifest's entry, else
    a class loaded from a file. The leaderboard labels cells with these; importing the methods
    would cost a new server process torch's import before its first page."""
    return table.infos.get(name) or table.loaded.get(name)


@lru_cache(maxsize=4096)
def task_defaults(task: str | None, preset: str | None) -> dict[str, Any] | None:
    """The task's declared defaults as its preset sets them (None: the task is not registered)."""
    from joulebench.harness.registry import registry

    declared = declaration(registry().tasks, task or "")
    if declared is None:
        return None
    defaults = {k: p.default for k, p in declared.params.items()}
    if preset in declared.presets:
        defaults.update(declared.presets[preset].params)
    return defaults


def differing(params: dict[str, Any], defaults: dict[str, Any], known_only: bool) -> list[str]:
    """``k=v`` for each value unlike its default (``known_only``: skip undeclared keys)."""
    missing = object()
    return [f"{k}={v}" for k, v in sorted(params.items())
            if (k in defaults or not known_only) and defaults.get(k, missing) != v]


@lru_cache(maxsize=16384)
def key_params(task: str | None, preset: str | None, method: str, method_params: str | None,
               task_params: str | None, with_model: bool = True) -> str:
    """The method's, then the task's parameters that differ from their defaults, as ``k=v, ...``
    (``with_model=False`` leaves the model out where it is shown in a column of its own)."""
    shown = differing(_loads(method_params), method_defaults(method, task, preset), known_only=False)
    defaults = task_defaults(task, preset)
    if defaults is not None:
        tparams = _loads(task_params)
        if not with_model:
            tparams = {k: v for k, v in tparams.items() if k != "model"}
        shown += differing(tparams, defaults, known_only=True)
    return ", ".join(shown)


def format_summary(s: dict[str, Any]) -> str:
    """One line per run: what differs from the defaults, metric, seconds, joules and where the
    joules come from (``estimate:...`` says they are modelled, not measured)."""
    metric = s.get("primary_metric") or "metric"
    value = s.get("primary_value")
    joules = s.get("train_energy_j")
    differs = key_params(s.get("task"), s.get("preset"), s.get("method") or "",
                         _dumps(s.get("method_params")), _dumps(s.get("task_params")))
    head = f"{s['task']}/{s['method']} {s['preset']}" + (f" {differs}" if differs else "")
    parts = [f"{head} seed={s['seed']} [{s['status']}]",
             f"{metric}={value:.4g}" if value is not None else f"{metric}=n/a",
             f"train {s['train_s']:.2f} s" if s.get("train_s") is not None else "train n/a",
             (f"{joules:.1f} J ({s.get('energy_source')})" if joules is not None
              else "energy n/a"), f"key {s['run_key']}"]
    if s.get("error"):
        parts.append(f"error: {s['error']}")
    return " | ".join(parts)


def _dumps(params: Any) -> str | None:
    """A hashable form for the cache (rows hold JSON text; a caller may pass a dict)."""
    return json.dumps(params, sort_keys=True) if isinstance(params, dict) else params
