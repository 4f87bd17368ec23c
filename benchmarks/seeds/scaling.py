"""Seed benchmark: the energy-scaling study (data-parallel training over device count, global
batch and local batch; energy against device-hours and what moves the slope).

The paper (ResNet50 and FourCastNet on A100/H100 nodes) reports energy approximately linear in
GPU-hours, with a scaling factor that differs between models and hardware and is influenced by
samples and gradient updates per GPU-hour. Here: ``examples/campaigns/scaling.toml`` (LTSF tiny,
backprop, 1 and 2 gloo ranks, the same global batches at both; 40 steps; 3 seeds) or, with
``--quick``, its global batches 16 and 32 at 20 steps and 2 seeds.

Headlines (median and range over seeds; each seed fitted over all its cells):
``energy_r2_train`` / ``energy_r2_total`` (R² of energy on device-hours, training window / whole
run), ``j_per_device_hour_train`` (the slope), ``rate_fit_r2`` and its coefficients.
With codecarbon's estimate (power × time) energy is linear in device-hours by construction: R²
near 1 says nothing about the hardware, and the slope is the assumed power (× 3,600).

    python benchmarks/seeds/scaling.py --quick
"""

from __future__ import annotations

from pathlib import Path

import common

from joulebench.cluster.campaign import Campaign, resolve_runs
from joulebench.cluster.scaling import ESTIMATE_NOTE, scaling_report
from joulebench.harness.params import SpecError

CAMPAIGN = Path(__file__).resolve().parents[2] / "examples" / "campaigns" / "scaling.toml"


def build(args) -> list:
    campaign = Campaign.load(CAMPAIGN)
    data = campaign.model_dump(exclude_none=True)
    data["defaults"]["seeds"] = common.seeds(args)
    data["defaults"]["timeout_s"] = common.TIMEOUT_S     # a label: the run keys stay the campaign's
    if args.quick:
        data["defaults"]["budget"] = {"steps": 20}
        for block in data["grid"]:
            ws = block["world_sizes"][0]
            block["task_params"]["batch_size"] = [g // ws for g in (16, 32)]
    return [spec for spec, _ in resolve_runs(Campaign.model_validate(data))]


def main() -> None:
    args = common.parser(__doc__, "scaling").parse_args()
    specs = build(args)
    rows = common.ok(common.run_specs(specs, args))
    print(common.table(rows, specs))
    fits = {}
    for seed, group in rows.groupby("seed"):
        try:
            fits[seed] = scaling_report(group)
        except SpecError as exc:
            print(f"seed {seed}: {exc}")
    for window in ("train", "total"):
        print(common.headline(f"energy_r2_{window}", [f.energy[window].r2 for f in fits.values()
                                                      if window in f.energy]))
    print(common.headline("j_per_device_hour_train",
                          [f.energy["train"].slope_j_per_device_hour for f in fits.values()]))
    rates = [f.rates["train"] for f in fits.values() if "train" in f.rates]
    print(common.headline("rate_fit_r2", [r.r2 for r in rates]))
    print(common.headline("rate_j_per_sample", [r.j_per_sample for r in rates]))
    print(common.headline("rate_j_per_update", [r.j_per_update for r in rates]))
    for seed, fit in fits.items():
        print(f"seed {seed}:\n{fit.describe()}")
    if any(f.estimated for f in fits.values()):
        print(f"note: {ESTIMATE_NOTE}")


if __name__ == "__main__":
    main()
