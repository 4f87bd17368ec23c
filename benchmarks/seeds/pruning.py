"""Seed benchmark: pruning Transformer forecasters (unstructured and structured, with and without
fine-tuning) against their dense counterparts.

The paper prunes several multivariate forecasting Transformers to rising sparsity and reports:
some models pruned to high sparsity beat their dense counterpart, fine-tuning is necessary, and
structured pruning gives no significant time saving. Here: LTSF (synthetic hourly series, the
``tiny`` preset; full mode the a 4,000-row series at 96 → 48, 200 steps, three seeds), the vanilla
Transformer and PatchTST, dense = backprop for the same number of steps;
unstructured density 0.5 → 0.05 (quick: 0.5 and 0.05; full: also 0.2; with fine-tuning: 60 % dense, 40 % fine-tuning; without:
the whole budget dense, then pruned and evaluated); structured density 0.5 (heads and FFN
channels kept).

Headlines: ``mse_ratio_<model>_<d>_<ft|noft>`` = test MSE pruned / dense at density d (below 1:
the pruned model is better), ``mac_ratio_<model>`` and ``latency_ratio_<model>`` for structured
pruning (MACs and median single-batch CPU latency, pruned / dense). Latency is measured here, not
estimated; inference energy would be an estimate ∝ time.

    python benchmarks/seeds/pruning.py --quick
"""

from __future__ import annotations

import common

from joulebench.harness.spec import RunSpec, resolve

MODELS = ("transformer", "patchtst")
QUICK_DENSITIES = (0.5, 0.05)
FULL_DENSITIES = (0.5, 0.2, 0.05)
"""Full mode: 0.5 → 0.05 with a midpoint, 200 steps on a 4,000-row series at 96 → 48, three
seeds (48 runs); sized for one slot of the shared two-core machine at load ~2 (at load 14 the
quick densities alone did not fit)."""


def setting(args) -> tuple[str, dict, dict]:
    """(preset, task params, budget)."""
    if args.quick:
        return "tiny", {}, {"steps": 60}
    return "tiny", {"n_rows": 4000, "seq_len": 96, "label_len": 48, "pred_len": 48}, {"steps": 200}


def build(args) -> dict[tuple, object]:
    preset, task, budget = setting(args)
    densities = QUICK_DENSITIES if args.quick else FULL_DENSITIES
    out = {}
    for model in MODELS:
        for seed in common.seeds(args):
            def spec(method: str, model=model, seed=seed, **mp):
                return resolve(RunSpec(task="ltsf", method=method, preset=preset, seed=seed,
                                       task_params={**task, "model": model}, budget=budget,
                                       method_params=mp, campaign="seed-pruning",
                                       timeout_s=common.TIMEOUT_S))
            out[(model, "dense", None, None, seed)] = spec("backprop")
            for d in densities:
                out[(model, "unstructured", d, True, seed)] = spec("prune", density=d)
                out[(model, "unstructured", d, False, seed)] = spec("prune", density=d, finetune=False,
                                                                    dense_fraction=1.0)
            out[(model, "structured", 0.5, True, seed)] = spec("prune", kind="structured", density=0.5)
    return out


def main() -> None:
    args = common.parser(__doc__, "pruning").parse_args()
    cells = build(args)
    specs = list(cells.values())
    rows = common.ok(common.run_specs(specs, args)).set_index("run_key")
    print(common.table(rows.reset_index(), specs))
    value = {k: rows.loc[s.run_key] for k, s in cells.items() if s.run_key in rows.index}
    for model in MODELS:
        seeds = common.seeds(args)
        dense = {s: value[(model, "dense", None, None, s)]["primary_value"] for s in seeds
                 if (model, "dense", None, None, s) in value}
        densities = sorted({k[2] for k in value if k[0] == model and k[1] == "unstructured"}, reverse=True)
        for d in densities:
            for ft in (True, False):
                ratios = [value[(model, "unstructured", d, ft, s)]["primary_value"] / dense[s]
                          for s in dense if (model, "unstructured", d, ft, s) in value]
                print(common.headline(f"mse_ratio_{model}_{d}_{'ft' if ft else 'noft'}", ratios))
        structured = [value[(model, "structured", 0.5, True, s)] for s in seeds
                      if (model, "structured", 0.5, True, s) in value]
        print(common.headline(f"mac_ratio_{model}", [r["x_mac_ratio"] for r in structured]))
        print(common.headline(f"latency_ratio_{model}", [r["x_latency_ratio"] for r in structured]))
        print(common.headline(f"structured_mse_ratio_{model}",
                              [r["primary_value"] / dense[s] for s, r in zip(seeds, structured) if s in dense]))
        unstructured = [value[k]["x_density_prunable"] for k in value
                        if k[0] == model and k[1] == "unstructured" and k[2] == 0.05 and k[3]]
        print(common.headline(f"density_actual_{model}_0.05", unstructured))


if __name__ == "__main__":
    main()
