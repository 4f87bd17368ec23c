"""Seed benchmark: AutoPQ on Load-BW — the cINN's quantiles against the paper's baselines, and
the energy the advanced configuration's search spends per unit of CRPS it gains.

The paper: AutoPQ turns a point forecast into quantiles with a cINN (trained on the target given
the covariates; the point forecast mapped into its latent, sampled around with a tuned spread,
inverted), selects the point forecaster automatically, and beats state-of-the-art probabilistic
forecasters; the default configuration tunes the sampling spread only, the advanced one also the
point forecaster's hyperparameters (HPC), and the paper reports the electricity the advanced
configuration spends for its gain.

Here (``Load-BW.csv`` from ``../shared/data``; skipped with the reason when absent), per seed:
- AutoPQ default: the cINN (``cinn_of=target``, ``center=point``, the authors' relative latent
  noise) on each point forecaster (linear, MLP, N-HiTS-style) with default hyperparameters, the
  spread chosen on validation CRPS; the forecaster with the lowest validation CRPS is selected;
  its cost is the sum of the three runs.
- AutoPQ advanced: an Optuna search (``methods/optuna_search.py``) over the forecaster, its width
  and learning rate, the spread again chosen on validation inside every trial; its cost is the
  search run's (every trial included).
- Baselines: quantile regression (``prob=quantile``, the MLP as median net, pinball loss; its
  own run) and, from the selected default run's own point forecast, a split-conformal interval
  and a Gaussian (σ from validation residuals × a factor chosen on validation CRPS). DeepAR
  itself (an autoregressive RNN) is not run. The earlier residual cINN (``cinn_of=residual``,
  ``center=zero``) on the MLP is the named variant. Quick: seeds 0 and 1; full: 0, 1, 2.

CRPS in every ratio is ``crps_q`` (twice the mean pinball loss on the 19 levels 0.05…0.95), one
estimator for quantile and sample forecasters. Headlines: ``crps_ratio_cinn_<baseline>`` (the
selected default run against the baseline; below 1: AutoPQ is better), ``..._quantile_mlp`` and
``crps_ratio_autopq_residual_mlp`` (both sides on the MLP), ``crps_gain_advanced`` (relative),
``energy_ratio_advanced_default`` and ``energy_per_crps_gain_j`` = extra joules of the advanced
configuration / CRPS it gains (J per unit of CRPS, the load's unit; NaN where it gains nothing). Energy is
codecarbon's estimate (power × time): every energy figure here is a time figure in disguise, and
on a shared machine wall time follows the load, so ``update_ratio_advanced_default`` (gradient
updates, advanced / default) is printed beside it as the load-independent measure of the work.

    python benchmarks/seeds/autopq.py --quick
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import common

from joulebench.harness.spec import RunSpec, resolve

SHARED = common.shared_data()

FORECASTERS = ("linear", "mlp", "nhits")
BASELINES = ("quantile", "conformal", "gauss")


PRESET = "short"
"""The task's preset of this benchmark: Load-BW, 150 steps (about 2 epochs), 50 samples. The
default configuration's runs and the advanced search's trials train the same 150 steps (a search's
trials train the search's steps, here the preset's: ``trial_budget=search``). Both modes use it
(the full mode adds the third seed): sized for the shared two-core machine (load 14–20: one seed
took about 15 minutes niced); the task's full preset trains 60 epochs (``--paper-scale``)."""
PAPER_PRESET = "full"
"""``--paper-scale``: the task's full preset, the paper's 60 epochs on Load-BW and 100 samples;
the search's trials train the same 60 epochs."""
TRIALS = 4


def build(args, csv: Path) -> dict[tuple, object]:
    preset = PAPER_PRESET if args.paper_scale else PRESET

    def spec(seed: int, method: str = "backprop", timeout: float = common.TIMEOUT_S, **kw):
        task = {"csv": str(csv), **kw.pop("task", {})}
        return resolve(RunSpec(task="load", method=method, preset=preset, seed=seed,
                               task_params=task, campaign="seed-autopq", timeout_s=timeout, **kw))
    out = {}
    for seed in common.seeds(args):
        for model in FORECASTERS:
            out[("default", model, seed)] = spec(seed, task={"model": model})
        out[("quantile", "mlp", seed)] = spec(seed, task={"model": "mlp", "prob": "quantile"})
        out[("residual", "mlp", seed)] = spec(seed, task={"model": "mlp", "cinn_of": "residual",
                                                          "center": "zero"})
        out[("advanced", "search", seed)] = spec(
            seed, method="optuna", timeout=common.TIMEOUT_S * (TRIALS + 1),
            method_params={"trials": TRIALS, "space": "lr,task.model,task.hidden"})
    return out


def selected(got: dict, seed: int):
    """AutoPQ default's choice: the forecaster with the lowest validation CRPS."""
    runs = [got[("default", m, seed)] for m in FORECASTERS if ("default", m, seed) in got]
    return min(runs, key=lambda r: r["val_crps"]) if len(runs) == len(FORECASTERS) else None


def headlines(got: dict, seeds: list[int]) -> list[str]:
    ratios = {b: [] for b in (*BASELINES, "quantile_mlp", "residual_mlp")}
    gain, energy_ratio, per_gain, updates = [], [], [], []
    for seed in seeds:
        best = selected(got, seed)
        if best is None:
            continue
        crps = best["metric_crps_q"]
        ratios["conformal"].append(crps / best["metric_crps_q_conformal"])
        ratios["gauss"].append(crps / best["metric_crps_q_gauss"])
        if ("quantile", "mlp", seed) in got:
            ratios["quantile"].append(crps / got[("quantile", "mlp", seed)]["metric_crps_q"])
        mlp = got[("default", "mlp", seed)]["metric_crps_q"]
        for name in ("quantile", "residual"):       # the same forecaster (MLP) on both sides
            if (name, "mlp", seed) in got:
                ratios[f"{name}_mlp"].append(mlp / got[(name, "mlp", seed)]["metric_crps_q"])
        if ("advanced", "search", seed) in got:
            adv = got[("advanced", "search", seed)]
            e_default = sum(got[("default", m, seed)]["total_energy_j"] for m in FORECASTERS)
            delta = crps - adv["metric_crps_q"]
            gain.append(delta / crps)
            energy_ratio.append(adv["total_energy_j"] / e_default)
            updates.append(adv["gradient_updates"]
                           / sum(got[("default", m, seed)]["gradient_updates"] for m in FORECASTERS))
            per_gain.append((adv["total_energy_j"] - e_default) / delta if delta > 0 else math.nan)
    lines = [common.headline(f"crps_ratio_cinn_{b}", ratios[b]) for b in BASELINES]
    lines += [common.headline("crps_ratio_cinn_quantile_mlp", ratios["quantile_mlp"]),
              common.headline("crps_ratio_autopq_residual_mlp", ratios["residual_mlp"]),
              common.headline("crps_gain_advanced", gain),
              common.headline("energy_ratio_advanced_default", energy_ratio),
              common.headline("update_ratio_advanced_default", updates),
              common.headline("energy_per_crps_gain_j", per_gain)]
    return lines


def main() -> None:
    parser = common.parser(__doc__, "autopq")
    parser.add_argument("--paper-scale", action="store_true",
                        help=f"the task's {PAPER_PRESET!r} preset (60 epochs) instead of {PRESET!r}")
    args = parser.parse_args()
    csv = SHARED / "Load-BW.csv"
    if not csv.is_file():
        print(f"skip: Load-BW.csv not found at {csv} (the benchmark needs ../shared/data)")
        sys.exit(0)
    cells = build(args, csv)
    rows = common.ok(common.run_specs(list(cells.values()), args))
    print(common.table(rows, list(cells.values())))
    rows = rows.set_index("run_key") if not rows.empty else rows
    got = {k: rows.loc[s.run_key] for k, s in cells.items() if s.run_key in rows.index}
    for seed in common.seeds(args):
        best = selected(got, seed)
        if best is not None:
            print(f"seed {seed}: default selects {best['p_model']} (val CRPS {best['val_crps']:.1f})")
    for line in headlines(got, common.seeds(args)):
        print(line)
    print("note: energy is codecarbon's estimate (power x time): energy ratios are time ratios")


if __name__ == "__main__":
    main()
