"""The energy-scaling study's fit: energy against device-hours, per task.

The seed paper finds energy close to linear in GPU-hours, with a slope that differs between
models and hardware and moves with samples and gradient updates per device-hour. This fits
``train_energy_j = slope × device_hours + intercept`` by least squares over stored runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from joulebench.harness.params import SpecError
from joulebench.harness.store import Store


@dataclass
class Fit:
    n: int
    slope_j_per_device_hour: float
    intercept_j: float
    r2: float
    estimated: bool

    def describe(self) -> str:
        note = " (energy figures are estimates)" if self.estimated else ""
        return (f"energy ≈ {self.slope_j_per_device_hour:.4g} J per device-hour × device-hours "
                f"+ {self.intercept_j:.4g} J; R² = {self.r2:.3f} over {self.n} runs{note}")


def fit_energy_vs_device_hours(root: Path, task: str | None = None, campaign: str | None = None) -> Fit:
    sql = ("SELECT device_hours, train_energy_j, energy_estimated FROM runs WHERE status = 'ok' "
           "AND parent_key IS NULL AND train_energy_j IS NOT NULL AND device_hours IS NOT NULL")
    params = []
    if task:
        sql += " AND task = ?"
        params.append(task)
    if campaign:
        sql += " AND campaign = ?"
        params.append(campaign)
    rows = Store(root).execute(sql, params).fetchall()
    if len(rows) < 3:
        raise SpecError(f"the scaling fit needs at least 3 successful runs, found {len(rows)}")
    x = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - (residual ** 2).sum() / total if total > 0 else float("nan")
    return Fit(len(rows), float(slope), float(intercept), float(r2), any(r[2] for r in rows))
