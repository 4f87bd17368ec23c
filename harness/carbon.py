"""Carbon intensity of electricity, from a pinned and cited table; nothing goes online.

The table is codecarbon's ``global_energy_mix.json`` (per-country yearly averages compiled by
codecarbon from Our World in Data / Ember; the year is in each entry), read from the installed,
version-pinned codecarbon package. Default region: Germany (DEU), override with
``JOULEBENCH_REGION`` or ``--region``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

from joulebench.harness.params import SpecError

DEFAULT_REGION = "DEU"


@dataclass(frozen=True)
class Intensity:
    region: str
    g_per_kwh: float
    source: str


@lru_cache(maxsize=1)
def _table() -> dict:
    import codecarbon

    path = Path(codecarbon.__file__).parent / "data" / "private_infra" / "global_energy_mix.json"
    return json.loads(path.read_text())


def intensity(region: str | None = None) -> Intensity:
    region = (region or os.environ.get("JOULEBENCH_REGION") or DEFAULT_REGION).upper()
    table = _table()
    if region not in table:
        raise SpecError(f"unknown region {region!r}: use an ISO 3166 alpha-3 code such as DEU, FRA, USA")
    entry = table[region]
    source = (f"codecarbon {version('codecarbon')} global_energy_mix.json "
              f"(OWID/Ember {entry.get('year', '?')}, {entry.get('country_name', region)})")
    return Intensity(region, float(entry["carbon_intensity"]), source)


def co2_grams(joules: float | None, g_per_kwh: float) -> float | None:
    return None if joules is None else joules / 3.6e6 * g_per_kwh
