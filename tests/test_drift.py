"""Drift verdicts of ``verify`` and ``reproduce`` on hand-built rows (no runs).

The CI failure of stop 25: a 0.097 s tiny run re-ran in 0.147 s on a loaded machine (+52 %), so a
correct bundle failed ``verify``. Relative drift alone cannot judge sub-second runs: the verdict
allows the relative tolerance plus an absolute noise floor in seconds (and the stored mean power
over that floor in joules), so long runs are still held to the relative rule."""

from __future__ import annotations

from joulebench.harness.drift import TIME_FLOOR_S, drift


def _row(train_s: float, joules: float, quality: float = 0.5) -> dict:
    return {"status": "ok", "primary_metric": "mse", "primary_value": quality, "train_s": train_s,
            "train_energy_j": joules, "hardware": "cpu:test", "device_kind": "cpu"}


def _verdicts(old: dict, new: dict) -> dict[str, str]:
    result = drift(old, new)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in result.lines[2:] if line.startswith("|")]
    return {c[0]: c[5] for c in cells}


def test_a_sub_second_run_jittering_by_half_its_time_passes():
    # the figures of the CI failure: 0.0966 s / 1.49 J stored, 0.1468 s / 2.15 J re-run
    old, new = _row(0.0965586, 1.49086), _row(0.146805, 2.15148)
    assert drift(old, new).passed, drift(old, new).lines
    assert _verdicts(old, new) == {"mse (test)": "yes", "train_s": "yes", "joules": "yes"}


def test_a_long_run_is_still_held_to_the_relative_tolerance():
    old, new = _row(10.0, 150.0), _row(16.0, 240.0)  # +60 %: far beyond the floor's share
    assert not drift(old, new).passed
    assert _verdicts(old, new)["train_s"] == "NO" and _verdicts(old, new)["joules"] == "NO"
    assert drift(old, _row(14.0, 210.0)).passed  # +40 %


def test_the_floor_is_absolute_not_a_second_relative_allowance():
    old = _row(0.1, 1.5)
    assert drift(old, _row(0.1 + 0.05 + TIME_FLOOR_S * 0.99, 1.5)).passed
    assert not drift(old, _row(0.1 + 0.05 + TIME_FLOOR_S * 1.01, 1.5)).passed
    # joules: the stored mean power (15 W) over the floor, on top of 50 %
    assert not drift(old, _row(0.1, 1.5 * 1.5 + 15 * TIME_FLOOR_S * 1.01)).passed


def test_quality_has_no_floor():
    assert not drift(_row(0.1, 1.5, 0.500), _row(0.1, 1.5, 0.506)).passed  # +1.2 %
