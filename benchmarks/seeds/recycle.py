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

from pathlib import Path

import common

from joulebench.harness.spec import RunSpec, resolve

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
REFERENCES = ("transformer", "patchtst")
MODELS = ("recycle", *REFERENCES, "rhp")


def datasets(quick: bool) -> dict[str, tuple[str, dict]]:
    """ETTh2 when ``../shared/data`` has it, and the synthetic series (full mode; quick mode only
    when ETTh2 is missing)."""
    out = {}
    if (SHARED / "ETTh2.csv").is_file():
        out["ETTh2"] = ("full", {"dataset": "ETTh2", "data_dir": str(SHARED)})
    if not quick or not out:
        out["synthetic"] = ("small", {})
    return out


def build(args) -> dict[tuple, object]:
    quick = args.quick
    shape = ({"seq_len": 96, "label_len": 48, "pred_len": 48, "d_model": 32, "d_ff": 64}
             if quick else {"seq_len": 336, "label_len": 48, "pred_len": 96, "d_model": 64, "d_ff": 128})
    budget = {"steps": 40} if quick else {"epochs": 3}
    out = {}
    for data, (preset, params) in datasets(quick).items():
        for model in MODELS:
            for seed in common.seeds(args):
                task = {**params, **shape, "model": model, "batch_size": 32, "e_layers": 2}
                if model in ("recycle", "rhp"):
                    task.update(cycle_len=24, rhp_cycles=3)
                out[(data, model, seed)] = resolve(RunSpec(
                    task="ltsf", method="backprop", preset=preset, seed=seed, task_params=task,
                    budget={"steps": 1} if model == "rhp" else budget, eval_every=10**9,
                    method_params={"lr": 1e-4 if model != "patchtst" else 1e-3},
                    campaign="seed-recycle"))
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
