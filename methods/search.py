"""What the search methods (Propulate, Optuna) share: the space, the objective, the bookkeeping.

A search is a method whose trials are child runs (``ctx.run_child``), each stored with this run's
key as ``parent_key``. Its own row adopts the best trial's quality and carries the cost of every
trial, because tuning is part of what the result cost.
"""

from __future__ import annotations

import json
import math
from typing import Any

from joulebench.harness.context import TrainContext
from joulebench.harness.params import Param, SpecError
from joulebench.harness.registry import registry

SEARCH_PARAMS = {
    "inner": Param("backprop", help="the method whose parameters are searched"),
    "space": Param("lr", help="comma-separated parameters of the inner method; 'all': every searchable one"),
}


def search_space(inner: str, names: str) -> dict[str, Param]:
    """The inner method's declared ranges for the named parameters."""
    declared = registry().method(inner).params
    wanted = [n for n, p in declared.items() if p.searchable] if names.strip() == "all" else \
        [n.strip() for n in names.split(",") if n.strip()]
    space = {}
    for name in wanted:
        if name not in declared:
            raise SpecError(f"method {inner!r} has no parameter {name!r} to search; "
                            f"allowed: {', '.join(n for n, p in declared.items() if p.searchable)}")
        if not declared[name].searchable:
            raise SpecError(f"parameter {name!r} of {inner!r} declares no range or choices")
        space[name] = declared[name]
    if not space:
        raise SpecError("the search space is empty")
    return space


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
