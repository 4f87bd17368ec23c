"""Seed benchmark: PETNet against the classical time-window sorter at rising pile-up.

The paper (PETNet, a fully connected SNN, 480 hidden nodes, 1,000 time steps, 36,000 training
samples) reports a coincidence F1 up to 0.952, above the classical algorithm, and up to 36×
faster prediction. Here the simulated ring detector of the ``tiny`` preset (2 rings × 16
crystals, 32 time steps; full mode the same detector trained 400 steps instead of 80, three
activities, three seeds) at
rising activity (annihilations per step: pile-up), PETNet in the authors' form (``arch=dense``)
and the shared-weight variant (``arch=local``), both with the geometry input, against the
calibrated sorter (window = max delay + 1).

Headlines: ``f1_<model>_<activity>`` (test F1) and ``throughput_ratio_<model>_<activity>`` =
events classified per second by PETNet / by the sorter on this CPU (batched SNN forward plus
decoding, against the vectorised numpy sorter; no GPU here, so no CUDA figure).

    python benchmarks/seeds/petnet.py --quick
"""

from __future__ import annotations

import common
import torch

from joulebench.harness.spec import RunSpec, resolve

MODELS = ("dense", "local", "sorter")
FULL_STEPS = 400
"""Full mode: the tiny detector at 5× the tiny preset's 80 steps. The small preset (8 epochs of
4,000 events) measured about 2 s per step niced on the shared two-core machine: 35 minutes a run."""


def build(args) -> dict[tuple, object]:
    activities = (0.05, 0.15) if args.quick else (0.05, 0.15, 0.4)
    preset = "tiny"
    out = {}
    for activity in activities:
        for model in MODELS:
            for seed in common.seeds(args):
                if model == "sorter":
                    task, method = {"model": "sorter", "activity": activity}, "time_window_sorter"
                else:
                    task, method = {"arch": model, "activity": activity}, "backprop"
                    if model == "local":
                        task.update(hidden=16, taps=6)  # the variant's own defaults before
                budget = {} if args.quick or model == "sorter" else {"budget": {"steps": FULL_STEPS}}
                out[(model, activity, seed)] = resolve(RunSpec(
                    task="pet", method=method, preset=preset, seed=seed, task_params=task,
                    campaign="seed-petnet", timeout_s=common.TIMEOUT_S, **budget))
    return out


def main() -> None:
    args = common.parser(__doc__, "petnet").parse_args()
    cells = build(args)
    rows = common.ok(common.run_specs(list(cells.values()), args)).set_index("run_key")
    print(common.table(rows.reset_index(), list(cells.values())))
    got = {k: rows.loc[s.run_key] for k, s in cells.items() if s.run_key in rows.index}
    for activity in sorted({k[1] for k in cells}):
        for model in MODELS:
            print(common.headline(f"f1_{model}_{activity}", [r["metric_f1"] for (m, a, _), r in got.items()
                                                            if m == model and a == activity]))
        for model in MODELS[:2]:
            ratios = [got[(model, activity, s)]["metric_events_per_s"] / got[("sorter", activity, s)]["metric_events_per_s"]
                      for s in common.seeds(args) if (model, activity, s) in got and ("sorter", activity, s) in got]
            print(common.headline(f"throughput_ratio_{model}_{activity}", ratios))
    if not torch.cuda.is_available():
        print("note: no CUDA device here: the GPU throughput figure is not measured")


if __name__ == "__main__":
    main()
