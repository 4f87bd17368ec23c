"""Seed benchmark: ReCycle against the Transformer baseline and PatchTST at equal horizon, and
against its own fallback (the recent historic profile alone).

The paper: ReCycle reaches state-of-the-art accuracy while cutting run time and energy by more
than an order of magnitude against the Transformers it compares with. Here every model trains
with Adam for the same number of steps and batch size on the same windows (ETTh2 from
``../shared/data`` when present, and the synthetic hourly series), ReCycle in the authors'
formulation (rolling per-day-type RHP, one token per cycle per series); the RHP has nothing to
train.

Headlines per data set: ``time_ratio_<ref>_<data>`` = training seconds of the reference model /
ReCycle's (above 1: ReCycle is faster), ``energy_ratio_<ref>_<data>`` the same for training energy,
``mse_ratio_<ref>_<data>`` = ReCycle's test MSE / the reference's (at or below 1: the speed-up
comes at equal or lower error), ``mse_ratio_rhp_<data>`` = ReCycle / RHP alone. Energy is
codecarbon's estimate (power × time), so the energy and time ratios coincide by construction.

    python benchmarks/seeds/recycle.py --quick
"""

from __future__ import annotations

import common

from joulebench.harness.registry import registry
from joulebench.harness.spec import RunSpec, resolve

SHARED = common.shared_data()

REFERENCES = ("transformer", "patchtst")
MODELS = ("recycle", *REFERENCES, "rhp")
ARCHITECTURE = ("d_model", "d_ff", "e_layers", "n_heads", "d_layers")
FULL_STEPS = 300
"""Full mode: the quick shape (96 → 48, d_model 32) at 300 Adam steps per model instead of 40
(about 1.1 epochs of ETTh2's training windows at batch 32): the 40 steps of ``--quick`` left
ReCycle behind RHP alone. Sized for a shared two-core machine: at 336 → 96 the Transformer took
over 10 minutes for 30 steps and its evaluation, niced, at load 10."""


def datasets(quick: bool) -> dict[str, tuple[str, dict]]:
    """ETTh2 when ``../shared/data`` has it, and the synthetic series (full mode; quick mode only
    when ETTh2 is missing)."""
    out = {}
    if (SHARED / "ETTh2.csv").is_file():
        out["ETTh2"] = ("full", {"dataset": "ETTh2", "data_dir": str(SHARED)})
    if not quick or not out:
        out["synthetic"] = ("small", {})
    return out


def untrained(preset: str) -> dict:
    """Backprop's own defaults in place of the preset's method defaults, for a model with nothing
    to train (the runner fails a run whose set parameters are never read)."""
    reg = registry()
    declared = reg.method("backprop").params
    overrides = reg.task("ltsf").presets[preset].method_defaults.get("backprop") or {}
    return {name: declared[name].default for name in overrides}


def build(args) -> dict[tuple, object]:
    quick = args.quick
    shape = {"seq_len": 96, "label_len": 48, "pred_len": 48, "d_model": 32, "d_ff": 64}
    budget = {"steps": 40} if quick else {"steps": FULL_STEPS}
    out = {}
    for data, (preset, params) in datasets(quick).items():
        for model in MODELS:
            for seed in common.seeds(args):
                task = {**params, **shape, "model": model, "batch_size": 32, "e_layers": 2}
                if model in ("recycle", "rhp"):
                    task.update(cycle_len=24, rhp_cycles=3)
                if model == "rhp":  # no network: its architecture parameters do not apply
                    task = {k: v for k, v in task.items() if k not in ARCHITECTURE}
                method_params = {"lr": 1e-4 if model != "patchtst" else 1e-3}
                if model == "rhp":  # nothing trains: the preset's optimiser settings are unread
                    method_params = untrained(preset)
                out[(data, model, seed)] = resolve(RunSpec(
                    task="ltsf", method="backprop", preset=preset, seed=seed, task_params=task,
                    budget={"steps": 1} if model == "rhp" else budget, eval_every=10**9,
                    method_params=method_params, campaign="seed-recycle",
                    timeout_s=common.TIMEOUT_S))
    return out


def main() -> None:
    args = common.parser(__doc__, "recycle").parse_args()
    cells = build(args)
    rows = common.ok(common.run_specs(list(cells.values()), args)).set_index("run_key")
    print(common.table(rows.reset_index(), list(cells.values())))
    got = {k: rows.loc[s.run_key] for k, s in cells.items() if s.run_key in rows.index}
    for data in datasets(args.quick):
        seeds = [s for s in common.seeds(args) if (data, "recycle", s) in got]
        rc = {s: got[(data, "recycle", s)] for s in seeds}
        for ref in REFERENCES:
            pairs = [(got[(data, ref, s)], rc[s]) for s in seeds if (data, ref, s) in got]
            print(common.headline(f"time_ratio_{ref}_{data}", [r["train_s"] / c["train_s"] for r, c in pairs]))
            print(common.headline(f"energy_ratio_{ref}_{data}",
                                  [r["train_energy_j"] / c["train_energy_j"] for r, c in pairs
                                   if r["train_energy_j"] and c["train_energy_j"]]))
            print(common.headline(f"mse_ratio_{ref}_{data}", [c["primary_value"] / r["primary_value"] for r, c in pairs]))
        print(common.headline(f"mse_ratio_rhp_{data}", [rc[s]["primary_value"] / got[(data, "rhp", s)]["primary_value"]
                                                         for s in seeds if (data, "rhp", s) in got]))
    print("note: energy is codecarbon's estimate (power x time): energy and time ratios coincide by construction")


if __name__ == "__main__":
    main()
