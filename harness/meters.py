"""One meter interface over the energy back-ends.

Every back-end exposes *cumulative* joules per device kind ("cpu", "gpu", "dram") since it started,
with the source of each figure. A window's energy is then the difference of two readings, which
costs milliseconds at the window edges and nothing inside the training loop.

Sources are named honestly: a sensor ("rapl", "nvml") or ``estimate:<how>``. A figure nobody can
give is None, never 0.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

DEVICES = ("cpu", "gpu", "dram")
POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class Reading:
    """Cumulative joules per device kind at time ``t`` (perf_counter seconds)."""

    t: float
    joules: dict[str, float | None] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def minus(self, earlier: Reading) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for dev in DEVICES:
            now, then = self.joules.get(dev), earlier.joules.get(dev)
            out[dev] = None if now is None or then is None else max(now - then, 0.0)
        return out


class Meter(Protocol):
    name: str

    def start(self) -> None: ...

    def read(self) -> Reading: ...

    def close(self) -> None: ...


class MeterUnavailable(RuntimeError):
    """A back-end that cannot measure here; the message says why and what would fix it."""


# -- RAPL ---------------------------------------------------------------------------------------
class RaplMeter:
    """Intel/AMD RAPL counters through powercap: package domains → cpu, dram sub-domains → dram.

    The counters wrap at ``max_energy_range_uj``; a background thread reads them often enough
    (default every 5 s) that no wrap is missed in a long window.
    """

    name = "rapl"

    def __init__(self, root: Path = POWERCAP, poll_s: float = 5.0) -> None:
        self.root = root
        self.poll_s = poll_s
        self._domains: list[tuple[str, Path, int]] = []
        self._last: dict[Path, int] = {}
        self._total: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _discover(self) -> None:
        zones = sorted(self.root.glob("intel-rapl:*")) + sorted(self.root.glob("amd-rapl:*"))
        if not zones:
            raise MeterUnavailable(f"no RAPL zones under {self.root} (not an x86 host, or powercap not loaded)")
        for zone in zones:
            name = (zone / "name").read_text().strip() if (zone / "name").exists() else ""
            kind = "cpu" if name.startswith("package") else "dram" if name == "dram" else None
            if kind is None:
                continue  # core/uncore are inside package: counting them would double-count
            energy = zone / "energy_uj"
            try:
                value = int(energy.read_text())
            except PermissionError:
                raise MeterUnavailable(
                    f"{energy} is not readable (permission denied); ask an admin to run "
                    f"'chmod a+r /sys/class/powercap/*/energy_uj' (or use perun/sudo on the node)"
                ) from None
            max_range = int((zone / "max_energy_range_uj").read_text())
            self._domains.append((kind, energy, max_range))
            self._last[energy] = value
        if not self._domains:
            raise MeterUnavailable(f"RAPL zones under {self.root} have no package or dram domain")

    def _poll(self) -> None:
        with self._lock:
            for kind, path, max_range in self._domains:
                value = int(path.read_text())
                delta = value - self._last[path]
                if delta < 0:  # the counter wrapped
                    delta += max_range
                self._last[path] = value
                self._total[kind] = self._total.get(kind, 0.0) + delta / 1e6

    def start(self) -> None:
        self._discover()
        self._total = {kind: 0.0 for kind, _, _ in self._domains}
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rapl-poll")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._poll()

    def read(self) -> Reading:
        self._poll()
        return Reading(time.perf_counter(), dict(self._total), {k: "rapl" for k in self._total})

    def close(self) -> None:
        self._stop.set()


# -- NVML ---------------------------------------------------------------------------------------
class NvmlMeter:
    """NVIDIA GPU energy counters (``nvmlDeviceGetTotalEnergyConsumption``, Volta and newer)."""

    name = "nvml"

    def __init__(self, device_indices: list[int] | None = None) -> None:
        self.device_indices = device_indices
        self._handles: list = []
        self._start_mj: list[int] = []

    def start(self) -> None:
        try:
            import pynvml
        except ImportError:
            raise MeterUnavailable("nvidia-ml-py is not installed") from None
        try:
            pynvml.nvmlInit()
            self._handles = [_nvml_handle(pynvml, i) for i in self._visible()]
            self._start_mj = [pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]
        except pynvml.NVMLError as exc:
            raise MeterUnavailable(f"NVML cannot read energy counters: {exc}") from None
        self._nvml = pynvml

    def _visible(self) -> list[int]:
        if self.device_indices is not None:
            return self.device_indices
        import torch

        return list(range(torch.cuda.device_count()))

    def read(self) -> Reading:
        mj = sum(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) - s
                 for h, s in zip(self._handles, self._start_mj))
        return Reading(time.perf_counter(), {"gpu": mj / 1e3}, {"gpu": "nvml"})

    def close(self) -> None:
        pass


def _nvml_handle(pynvml, torch_index: int):
    """Map a torch device index to its NVML handle by PCI bus id (CUDA and NVML orders differ)."""
    import torch

    props = torch.cuda.get_device_properties(torch_index)
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        domain = getattr(props, "pci_domain_id", 0)
        dev = getattr(props, "pci_device_id", 0)
        return pynvml.nvmlDeviceGetHandleByPciBusId(f"{domain:08x}:{bus:02x}:{dev:02x}.0".encode())
    return pynvml.nvmlDeviceGetHandleByIndex(torch_index)


# -- estimate through codecarbon ----------------------------------------------------------------
class CodeCarbonEstimate:
    """An *estimate* from codecarbon's offline tracker: CPU power from the process's CPU load and a
    TDP figure (4 W per thread when the CPU model is unknown), RAM power as a fixed guess.

    The tracker's ~1 s start-up (CPU detection) is paid once per worker process. Its own
    background sampling is switched off: readings are taken at our window edges.
    """

    name = "codecarbon"

    def __init__(self, country_iso_code: str = "DEU") -> None:
        self.country = country_iso_code
        self._tracker = None

    def start(self) -> None:
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError:
            raise MeterUnavailable("codecarbon is not installed") from None
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self._tracker = OfflineEmissionsTracker(
            country_iso_code=self.country, measure_power_secs=3600, output_methods=[],
            log_level="error", tracking_mode="process", gpu_ids=[],
        )
        self._tracker.start()
        self._sources = self._describe()

    def _describe(self) -> dict[str, str]:
        sources = {}
        for hw in self._tracker._hardware:
            kind = type(hw).__name__
            if kind == "CPU":
                mode = getattr(hw, "_mode", "unknown")
                measured = mode in {"intel_rapl", "intel_power_gadget", "apple_powermetrics"}
                tdp = getattr(hw, "_tdp", None)
                how = f"codecarbon/{mode}" + (f",tdp={tdp}W" if tdp else "")
                sources["cpu"] = how if measured else f"estimate:{how}"
            elif kind == "RAM":
                sources["dram"] = "estimate:codecarbon/ram-power-model"
        return sources

    def read(self) -> Reading:
        t = self._tracker
        t._measure_power_and_energy()
        joules = {"cpu": t._total_cpu_energy.kWh * 3.6e6, "dram": t._total_ram_energy.kWh * 3.6e6}
        return Reading(time.perf_counter(), {k: v for k, v in joules.items() if k in self._sources},
                       dict(self._sources))

    def close(self) -> None:
        if self._tracker is not None:
            try:
                self._tracker.stop()
            except Exception:  # stopping an estimator must never fail a run
                pass


# -- composition --------------------------------------------------------------------------------
class CompositeMeter:
    """Sensors first, estimates only for what no sensor covers; one Reading over all of them."""

    name = "composite"

    def __init__(self, meters: list) -> None:
        self.meters = meters
        self.notes: list[str] = []

    def start(self) -> None:
        started = []
        covered: set[str] = set()
        for meter in self.meters:
            try:
                meter.start()
            except MeterUnavailable as exc:
                self.notes.append(f"{meter.name}: {exc}")
                continue
            started.append(meter)
        self.meters = started
        # keep for each device the first meter (in priority order) that reports it
        self._owner: dict[str, object] = {}
        for meter in self.meters:
            for dev in meter.read().joules:
                if dev not in covered:
                    covered.add(dev)
                    self._owner[dev] = meter

    def read(self) -> Reading:
        joules: dict[str, float | None] = {}
        sources: dict[str, str] = {}
        for meter in self.meters:
            reading = meter.read()
            for dev, value in reading.joules.items():
                if self._owner.get(dev) is meter:
                    joules[dev] = value
                    sources[dev] = reading.sources[dev]
        return Reading(time.perf_counter(), joules, sources)

    def close(self) -> None:
        for meter in self.meters:
            meter.close()


def default_meter(device: str = "cpu", country: str | None = None) -> CompositeMeter:
    """RAPL for cpu/dram where readable, NVML on GPUs, codecarbon's estimate for the rest.

    ``JOULEBENCH_METER=estimate`` skips the sensors (for tests of the estimate path).
    """
    country = country or os.environ.get("JOULEBENCH_REGION", "DEU")
    meters: list = []
    if os.environ.get("JOULEBENCH_METER", "auto") != "estimate":
        meters.append(RaplMeter())
        if device == "cuda":
            meters.append(NvmlMeter())
    meters.append(CodeCarbonEstimate(country))
    composite = CompositeMeter(meters)
    composite.start()
    return composite
