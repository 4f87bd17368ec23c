"""Phase accounting: wall time and energy per window (setup | train | eval).

The clock reads the meter only when the phase changes, so training steps pay nothing. Evaluation
interleaved with training is its own window and never charged to training. Beside wall seconds it
keeps this process's CPU seconds per window: on a shared machine wall time stretches with the
neighbours' load while CPU time does not, so their ratio says whether a time was contended.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from joulebench.harness.meters import DEVICES, Reading


class Phase(StrEnum):
    """The windows of a run; each is metered on its own."""

    SETUP = "setup"
    TRAIN = "train"
    EVAL = "eval"


PHASES = tuple(p.value for p in Phase)


class PhaseClock:
    def __init__(self, meter, sync: Callable[[], None] | None = None) -> None:
        self.meter = meter
        self.sync = sync or (lambda: None)
        self.seconds = {p: 0.0 for p in PHASES}
        self.cpu_seconds = {p: 0.0 for p in PHASES}
        self.joules: dict[str, dict[str, float | None]] = {p: {d: None for d in DEVICES} for p in PHASES}
        self.sources: dict[str, str] = {}
        self.current: str | None = None
        self._last: Reading | None = None
        self._last_cpu = time.process_time()
        self.started = time.perf_counter()

    def switch(self, phase: str | None) -> None:
        """End the current window and open ``phase`` (None closes the clock)."""
        self.sync()
        reading = self.meter.read() if self.meter is not None else Reading(time.perf_counter())
        cpu = time.process_time()
        if self.current is not None and self._last is not None:
            self.seconds[self.current] += reading.t - self._last.t
            self.cpu_seconds[self.current] += cpu - self._last_cpu
            for dev, value in reading.minus(self._last).items():
                if value is not None:
                    prev = self.joules[self.current][dev]
                    self.joules[self.current][dev] = value + (prev or 0.0)
        self.sources.update(reading.sources)
        self.current, self._last, self._last_cpu = phase, reading, cpu

    def total_j(self, phase: str) -> float | None:
        values = [v for v in self.joules[phase].values() if v is not None]
        return sum(values) if values else None

    def peek(self, phase: str) -> tuple[float, float | None]:
        """Seconds and joules of ``phase`` so far, including the open window, without switching."""
        seconds, joules = self.seconds[phase], self.total_j(phase)
        if self.current == phase and self._last is not None:
            reading = self.meter.read() if self.meter is not None else Reading(time.perf_counter())
            seconds += reading.t - self._last.t
            extra = [v for v in reading.minus(self._last).values() if v is not None]
            if extra:
                joules = (joules or 0.0) + sum(extra)
        return seconds, joules

    def elapsed(self, phase: str) -> float:
        """Seconds of ``phase`` so far, the open window included, without reading the meter
        (cheap enough to call on every training step, for a seconds budget)."""
        seconds = self.seconds[phase]
        if self.current == phase and self._last is not None:
            seconds += time.perf_counter() - self._last.t
        return seconds

    def train_so_far(self) -> tuple[float, float | None]:
        """Training seconds and joules up to now; call while the train window is closed."""
        return self.seconds["train"], self.total_j("train")
