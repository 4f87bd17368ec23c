"""The energy-scaling study's fits: energy against device-hours, and what moves the slope.

The seed paper (data-parallel ResNet50 and FourCastNet, varying GPU count, global batch and local
batch) finds energy approximately linear in GPU-hours, with a scaling factor (J per GPU-hour) that
differs between models and hardware and is systematically influenced by the number of samples and
gradient updates per GPU-hour. So this module fits two things over stored runs:

1. ``energy = slope × device_hours + intercept`` with R² and the residuals, where energy and
   device-hours come from the *same* window: training (``train_energy_j`` against
   ``world_size × train_s``) by default, the whole run (``total_energy_j`` against
   ``world_size × wall_s``) as a second fit. (A fit of training energy on wall-clock device-hours
   mixes two windows: on a tiny run 0.27 s wall against 0.064 s training.)
2. ``J per device-hour = a × samples per device-hour + b × updates per device-hour + c``
   (coefficients and R²): the seed's finding that throughput moves the scaling factor.

**Estimated energy.** Without RAPL or GPU counters energy is codecarbon's estimate, power × time;
energy is then linear in device-hours *by construction*, and the slope is the assumed power
(J per device-hour = 3,600 × watts). Fits over estimated rows are marked so wherever they are shown;
only measured energy can confirm or refute the seed's linearity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from joulebench.harness.params import SpecError
from joulebench.harness.store import Store

Window = Literal["train", "total"]
WINDOWS: dict[str, tuple[str, str]] = {"train": ("train_energy_j", "train_s"),
                                       "total": ("total_energy_j", "wall_s")}
"""window → (energy column, seconds column): energy and device-hours from one window."""

ESTIMATE_NOTE = ("energy is estimated (power × time): linear in device-hours by construction; "
                 "the slope is the assumed power, not a measurement")
COLUMNS = ("run_key", "world_size", "local_batch", "global_batch", "train_s", "wall_s",
           "train_energy_j", "total_energy_j", "samples", "gradient_updates", "energy_estimated")


@dataclass
class LinearFit:
    """Energy against device-hours over one window."""

    window: str
    n: int
    slope_j_per_device_hour: float
    intercept_j: float
    r2: float
    residuals_j: list[float]
    estimated: bool

    def describe(self) -> str:
        worst = max((abs(r) for r in self.residuals_j), default=float("nan"))
        return (f"[{self.window}] energy ≈ {self.slope_j_per_device_hour:.4g} J/device-hour × "
                f"device-hours + {self.intercept_j:.4g} J; R² = {self.r2:.3f} over {self.n} runs; "
                f"largest residual {worst:.3g} J")


@dataclass
class RateFit:
    """J per device-hour regressed on samples and gradient updates per device-hour."""

    window: str
    n: int
    j_per_sample: float
    j_per_update: float
    intercept_j_per_device_hour: float
    r2: float

    def describe(self) -> str:
        return (f"[{self.window}] J/device-hour ≈ {self.j_per_sample:.4g} × samples/device-hour + "
                f"{self.j_per_update:.4g} × updates/device-hour + "
                f"{self.intercept_j_per_device_hour:.4g}; R² = {self.r2:.3f} over {self.n} runs")


@dataclass
class ScalingReport:
    energy: dict[str, LinearFit]
    rates: dict[str, RateFit]
    estimated: bool
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f.describe() for f in self.energy.values()] + [f.describe() for f in self.rates.values()]
        if self.estimated:
            lines.append(f"note: {ESTIMATE_NOTE}")
        return "\n".join(lines + self.notes)


def load_rows(root: Path, task: str | None = None, campaign: str | None = None) -> pd.DataFrame:
    """Successful top-level runs with the columns both fits need."""
    sql = f"SELECT {', '.join(COLUMNS)} FROM runs WHERE status = 'ok' AND parent_key IS NULL"
    params = []
    for column, value in (("task", task), ("campaign", campaign)):
        if value:
            sql += f" AND {column} = ?"
            params.append(value)
    cursor = Store(root).execute(sql, params)
    return pd.DataFrame(cursor.fetchall(), columns=list(COLUMNS))


def window_frame(rows: pd.DataFrame, window: Window) -> pd.DataFrame:
    """device_hours, energy_j and throughputs of one window; rows lacking either are dropped."""
    energy_col, seconds_col = WINDOWS[window]
    out = pd.DataFrame({"run_key": rows["run_key"],
                        "device_hours": rows["world_size"] * rows[seconds_col] / 3600.0,
                        "energy_j": rows[energy_col],
                        "samples": rows["samples"], "gradient_updates": rows["gradient_updates"],
                        "estimated": rows["energy_estimated"].fillna(True).astype(bool)})
    out = out.dropna(subset=["device_hours", "energy_j"])
    out = out[out["device_hours"] > 0]
    out["j_per_device_hour"] = out["energy_j"] / out["device_hours"]
    out["samples_per_device_hour"] = out["samples"] / out["device_hours"]
    out["updates_per_device_hour"] = out["gradient_updates"] / out["device_hours"]
    return out.reset_index(drop=True)


def r_squared(y: np.ndarray, predicted: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - predicted) ** 2).sum()) / total if total > 0 else float("nan")


def fit_energy(frame: pd.DataFrame, window: str) -> LinearFit:
    """Least squares of energy on device-hours (needs 3+ runs)."""
    if len(frame) < 3:
        raise SpecError(f"the scaling fit needs at least 3 successful runs, found {len(frame)}")
    x, y = frame["device_hours"].to_numpy(float), frame["energy_j"].to_numpy(float)
    slope, intercept = np.polyfit(x, y, 1)
    predicted = slope * x + intercept
    return LinearFit(window, len(frame), float(slope), float(intercept), r_squared(y, predicted),
                     (y - predicted).tolist(), bool(frame["estimated"].any()))


def fit_rates(frame: pd.DataFrame, window: str) -> RateFit:
    """Least squares of J per device-hour on samples and updates per device-hour (4+ runs)."""
    frame = frame.dropna(subset=["samples_per_device_hour", "updates_per_device_hour"])
    if len(frame) < 4:
        raise SpecError(f"the throughput regression needs at least 4 runs with samples and updates, "
                        f"found {len(frame)}")
    design = np.column_stack([frame["samples_per_device_hour"].to_numpy(float),
                              frame["updates_per_device_hour"].to_numpy(float), np.ones(len(frame))])
    y = frame["j_per_device_hour"].to_numpy(float)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return RateFit(window, len(frame), float(coef[0]), float(coef[1]), float(coef[2]),
                   r_squared(y, design @ coef))


def scaling_report(rows: pd.DataFrame) -> ScalingReport:
    """Both fits over both windows; the training-window energy fit is required, the rest is
    reported when the rows allow it (a note says why not otherwise)."""
    energy, rates, notes = {}, {}, []
    for window in WINDOWS:
        frame = window_frame(rows, window)
        for target, fit in ((energy, fit_energy), (rates, fit_rates)):
            try:
                target[window] = fit(frame, window)
            except SpecError as exc:
                if window == "train" and fit is fit_energy:
                    raise
                notes.append(f"[{window}] {exc}")
    estimated = any(f.estimated for f in energy.values())
    return ScalingReport(energy, rates, estimated, notes)


def report_for(root: Path, task: str | None = None, campaign: str | None = None) -> ScalingReport:
    return scaling_report(load_rows(root, task, campaign))
