"""Meters: RAPL counters (on a powercap tree laid out as the kernel does), estimates, phases."""

from __future__ import annotations

from pathlib import Path

import pytest

from joulebench.harness import carbon
from joulebench.harness.meters import CodeCarbonEstimate, CompositeMeter, MeterUnavailable, RaplMeter
from joulebench.harness.phases import PhaseClock


def make_zone(root: Path, name: str, zone: str, energy: int, max_range: int = 1000_000) -> Path:
    d = root / zone
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d / "energy_uj"


def test_rapl_sums_package_and_dram_and_handles_wraparound(tmp_path: Path) -> None:
    pkg = make_zone(tmp_path, "package-0", "intel-rapl:0", 900_000)
    make_zone(tmp_path, "core", "intel-rapl:0:0", 5)  # inside the package: must not be added
    dram = make_zone(tmp_path, "dram", "intel-rapl:0:1", 100)
    meter = RaplMeter(root=tmp_path, poll_s=3600)
    meter.start()
    start = meter.read()
    pkg.write_text("200000\n")  # wrapped: 900000 → 1000000 → 200000 = 300000 µJ
    dram.write_text("2100\n")
    end = meter.read()
    meter.close()
    assert end.minus(start) == {"cpu": pytest.approx(0.3), "gpu": None, "dram": pytest.approx(0.002)}
    assert end.sources == {"cpu": "rapl", "dram": "rapl"}


def test_rapl_permission_error_explains_the_fix(tmp_path: Path, monkeypatch) -> None:
    counter = make_zone(tmp_path, "package-0", "intel-rapl:0", 1)
    real_read = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if self == counter:  # what an unprivileged user gets since the 2020 RAPL hardening
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(MeterUnavailable, match="chmod a\\+r"):
        RaplMeter(root=tmp_path).start()


def test_no_rapl_here_falls_back_to_a_labelled_estimate(tmp_path: Path) -> None:
    meter = CompositeMeter([RaplMeter(root=tmp_path / "none"), CodeCarbonEstimate("DEU")])
    meter.start()
    clock = PhaseClock(meter)
    clock.switch("train")
    sum(i * i for i in range(300_000))
    clock.switch(None)
    meter.close()
    assert "rapl: no RAPL zones" in meter.notes[0]
    assert clock.joules["train"]["cpu"] > 0 and clock.joules["train"]["gpu"] is None
    assert clock.sources["cpu"].startswith("estimate:codecarbon/")
    assert clock.sources["dram"].startswith("estimate:")


def test_carbon_intensity_comes_from_the_cited_table() -> None:
    de = carbon.intensity("deu")
    assert de.region == "DEU" and 100 < de.g_per_kwh < 1000 and "global_energy_mix" in de.source
    assert carbon.co2_grams(3.6e6, 400.0) == 400.0 and carbon.co2_grams(None, 400.0) is None
    with pytest.raises(ValueError, match="ISO 3166"):
        carbon.intensity("XXX")


def test_a_meter_that_fails_to_start_fails_the_run_not_the_worker(tmp_path) -> None:
    """The cpu meter starts in a thread beside the worker's imports; a failure there must still
    reach the run that needs the meter (stored as its failure), and the next run tries again."""
    from joulebench.harness.spec import RunSpec, resolve
    from joulebench.harness.store import Store
    from joulebench.harness.worker import Worker

    spec = resolve(RunSpec(task="ltsf", method="backprop", preset="tiny", budget={"steps": 2}))
    with Worker(tmp_path, region="NOPE") as worker:
        first, second = worker.run(spec), worker.run(spec)
    for result in (first, second):
        assert result["status"] == "crashed" and "unknown region 'NOPE'" in result["error"]
    assert Store(tmp_path).execute("select count(*) from attempts").fetchall() == [(2,)]
