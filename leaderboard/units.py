"""Figures for reading: one unit and scale per column (J / kJ / MJ, s / min / h, g / kg CO2) and
three significant digits, so a reader compares rows at a glance; the full value stays available
(tooltips, CSV).

A whole column shares its scale (chosen from its median), because a column that mixes ``225 J``
and ``1.2 kJ`` invites reading digits instead of magnitudes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

SCALES: dict[str, tuple[tuple[float, str], ...]] = {
    "J": ((1.0, "J"), (1e3, "kJ"), (1e6, "MJ"), (1e9, "GJ")),
    "s": ((1.0, "s"), (60.0, "min"), (3600.0, "h")),
    "g CO2": ((1.0, "g CO2"), (1e3, "kg CO2"), (1e6, "t CO2")),
    "h": ((1.0 / 3600, "device-s"), (1.0 / 60, "device-min"), (1.0, "device-h")),
}
MISSING = "—"


def is_missing(value: object) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def sig3(value: float) -> str:
    """Three significant digits without an exponent for everyday magnitudes (225.11 -> ``225``,
    0.37764 -> ``0.378``, 12345 -> ``12300``); an exponent only below 0.001 or from 1e7 up."""
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude < -3 or magnitude >= 7:
        return f"{value:.2e}"
    decimals = max(0, 2 - magnitude)
    rounded = round(value, 2 - magnitude)
    if round(abs(rounded), decimals) >= 10 ** (magnitude + 1):  # 999.6 rounds to 1000: one digit less
        decimals = max(0, decimals - 1)
    return f"{rounded:.{decimals}f}"


def fmt(value: object, missing: str = MISSING) -> str:
    """A figure for the page: numbers to 3 significant digits, text as it is."""
    if is_missing(value):
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int,)) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e7):
        return f"{int(value)}" if abs(value) < 1e4 else f"{int(value):,}"
    if isinstance(value, float):
        return sig3(value)
    return str(value)


@dataclass(frozen=True)
class Scale:
    factor: float
    label: str

    def show(self, value: object) -> str:
        return MISSING if is_missing(value) else sig3(float(value) / self.factor)


def scale_for(values: Iterable[object], unit: str) -> Scale:
    """The largest scale of ``unit`` at or below the column's median magnitude."""
    present = [abs(float(v)) for v in values if not is_missing(v) and float(v) != 0]
    steps = SCALES[unit]
    if not present:
        return Scale(*steps[0])
    typical = float(pd.Series(present).median())
    chosen = steps[0]
    for factor, label in steps:
        if typical >= factor:
            chosen = (factor, label)
    return Scale(*chosen)


def ratio(value: object) -> str:
    """A ratio to the baseline, as ``10.0×``."""
    return MISSING if is_missing(value) else f"{sig3(float(value))}×"


def percent(value: object) -> str:
    return MISSING if is_missing(value) else f"{100 * float(value):.0f}%"
