"""What the search methods (Propulate, Optuna) share: the space, the objective, the bookkeeping.

A search is a method whose trials are child runs (``ctx.run_child``), each stored with this run's
key as ``parent_key``. Its own row adopts the best trial's quality and carries the cost of every
trial, because tuning is part of what the result cost.

A trial trains the search run's steps and epochs (``trial_budget=search``), so a search asked for
with a budget tunes at that budget and the trials' keys and rows say so; the search's seconds stay
the whole search's limit, never one trial's. ``trial_budget=preset`` is the earlier behaviour:
each trial trains its preset's budget whatever the search was given.
"""

from __future__ import annotations

import json
import math
from typing import Any

from joulebench.harness.context import TrainContext
from joulebench.harness.params import Param, SpecError
from joulebench.harness.registry import registry
from joulebench.harness.spec import Budget

SEARCH_PARAMS = {
    "inner": Param("backprop", help="the method whose parameters are searched"),
    "space": Param("lr", help="comma-separated parameters of the inner method (task.NAME: of the task); 'all': every searchable one of the method"),
    "trial_budget": Param("search", choices=("search", "preset"),
                          help="search: each trial trains this run's steps/epochs (its seconds limit "
                               "the whole search); preset: each trial trains its preset's budget"),
}


def search_space(inner: str, names: str, task: str | None = None) -> dict[str, Param]:
    """The declared ranges of the named parameters: the inner method's, or the task's when the
    name starts with ``task.`` (a forecaster choice, a sampling spread: AutoPQ searches both)."""
    declared = registry().method(inner).params
    wanted = [n for n, p in declared.items() if p.searchable] if names.strip() == "all" else \
        [n.strip() for n in names.split(",") if n.strip()]
    space = {}
    for name in wanted:
        owner, table = (f"task {task!r}", registry().task(task).params) if name.startswith("task.") and task \
            else (f"method {inner!r}", declared)
        key = name.removeprefix("task.") if table is not declared else name
        if key not in table:
            raise SpecError(f"{owner} has no parameter {key!r} to search; "
                            f"allowed: {', '.join(n for n, p in table.items() if p.searchable)}")
        if not table[key].searchable:
            raise SpecError(f"parameter {key!r} of {owner} declares no range or choices")
        space[name] = table[key]
    if not space:
        raise SpecError("the search space is empty")
    return space


def trial_budget(search: Budget, mode: str) -> dict[str, Any] | None:
    """The budget a trial is asked for: the search's steps and epochs (``search``), or none, so
    the trial resolves its preset's (``preset``, or a search given seconds only). The search's
    seconds are not handed on: they bound the search (Optuna starts no trial past them), and one
    trial given all of them would leave the others nothing."""
    if mode == "preset":
        return None
    per_trial = Budget(steps=search.steps, epochs=search.epochs)
    return None if per_trial.is_empty() else per_trial.model_dump(exclude_none=True)


def run_trial(ctx: TrainContext, inner: str, params: dict[str, Any],
              budget_mode: str = "search") -> dict[str, Any]:
    """One trial as a child run; ``task.``-prefixed values go to the task's parameters; its budget
    is :func:`trial_budget` of this search's."""
    task_params = {k.removeprefix("task."): v for k, v in params.items() if k.startswith("task.")}
    method_params = {k: v for k, v in params.items() if not k.startswith("task.")}
    budget = trial_budget(ctx.spec.budget, budget_mode)
    return ctx.run_child(method=inner, method_params=method_params,
                         task_params={**ctx.spec.task_params, **task_params},
                         **({"budget": budget} if budget else {}))


def trial_loss(row: dict[str, Any], ctx: TrainContext) -> float:
    """Validation value of the primary metric, as a loss (negated when higher is better)."""
    task = type(ctx.task)
    value = row.get(f"val_{task.primary_metric}")
    if row.get("status") != "ok" or value is None or not math.isfinite(value):
        return math.inf
    return -value if task.higher_is_better() else value


class Tracker:
    """Counts trials into the search run and keeps the best one and a best-so-far curve."""

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx, self.best, self.best_loss, self.trials, self.failed = ctx, None, math.inf, 0, 0

    def add(self, row: dict[str, Any], params: dict[str, Any]) -> float:
        loss = trial_loss(row, self.ctx)
        self.trials += 1
        self.failed += row.get("status") != "ok"
        self.ctx.count(samples=row.get("samples") or 0, updates=row.get("gradient_updates") or 0)
        if loss < self.best_loss:
            self.best, self.best_loss = {**row, "_params": params}, loss
        if self.best is not None:
            name = type(self.ctx.task).primary_metric
            self.ctx.log_point({name: self.best[f"val_{name}"]})
        return loss

    def finish(self, extra_rows: list[dict[str, Any]] | None = None) -> None:
        """Adopt the best trial (of this process and ``extra_rows`` from other ranks)."""
        for row in extra_rows or []:
            if trial_loss(row, self.ctx) < self.best_loss:
                self.best, self.best_loss = row, trial_loss(row, self.ctx)
        if self.best is None:
            raise RuntimeError(f"all {self.trials} trials failed; see the child runs' errors")
        self.ctx.record(trials=self.trials, failed_trials=self.failed,
                        best_trial=self.best["run_key"],
                        best_params=json.dumps(self.best.get("_params", {}), sort_keys=True))
        self.ctx.adopt(self.best)
