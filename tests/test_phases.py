"""The phase clock keeps this process's CPU seconds per window beside wall seconds."""

from __future__ import annotations

import time

from joulebench.harness.phases import Phase, PhaseClock


def test_cpu_seconds_count_work_not_waiting() -> None:
    """A window spent waiting (a neighbour holding the core looks the same to the run) has wall
    seconds and almost no CPU seconds; a busy window has both."""
    clock = PhaseClock(meter=None)
    clock.switch(Phase.SETUP)
    time.sleep(0.3)
    clock.switch(Phase.TRAIN)
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        sum(range(1000))
    clock.switch(None)
    assert clock.seconds["setup"] >= 0.3 and clock.cpu_seconds["setup"] < 0.1
    assert clock.seconds["train"] >= 0.3 and clock.cpu_seconds["train"] > clock.cpu_seconds["setup"]
    assert clock.cpu_seconds["eval"] == 0.0
