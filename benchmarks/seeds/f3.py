"""F³ seed benchmark: how much of the gap between DRTP/LLO and backprop F³ closes (paper: up to 96 %).

The paper's regression setting at CPU scale: LTSF univariate (``features=S``), a short horizon,
the channel-independent MLP with Tanh hidden layers (``activation=tanh`` for every method, so
backprop and LLO train the same network the feedback methods train), Adam, a learning-rate grid
per method (best by median validation MSE over seeds, then scored on test), enough epochs for the
feedback methods' loss to flatten as far as the machine allows (quick: 8, full: 20; the paper runs 100–500).

    .venv/bin/python benchmarks/seeds/f3.py --quick
    .venv/bin/python benchmarks/seeds/f3.py --results /tmp/f3-full

Headlines (per seed, each method at its best lr; median and range over seeds):
``gap_closed_vs_drtp`` and ``gap_closed_vs_llo`` = (E_baseline − E_F³) / (E_baseline − E_BP), and
``gap_closed_dfa_vs_llo`` for comparison; the same with suffix ``_cls`` for classification, where
E is the test error rate 1 − top-1.

Classification (the paper's second table, its MNIST/CIFAR fully connected networks): the
``imagenet`` task's generated texture classes (``tiny``: 4 classes, 200 training JPEGs, here at
16 px) with ``model=mlp`` — the flattened image, two Tanh layers of 128 units, linear logits —
and the task's cross-entropy (the authors put a Sigmoid on the output instead). Quick: 8 epochs;
full: 30 epochs, 3 seeds. Sized for the shared 2-core machine, far below the paper's 100–500
epochs: on a regression or classification row where the feedback methods still improve at the
end, "converged" does not hold and the table says what the budget gives.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from joulebench.harness.spec import RunSpec, resolve  # noqa: E402

METHODS = ("backprop", "f3", "dfa", "drtp", "llo")
LR_GRID = {"quick": (3e-4, 3e-3), "full": (3e-4, 1e-3, 3e-3)}
REGRESSION = {"model": "mlp", "features": "S", "activation": "tanh", "seq_len": 48, "pred_len": 12,
              "label_len": 0, "d_ff": 128, "e_layers": 2, "batch_size": 50}
CLASSIFICATION = {"model": "mlp", "image_size": 16, "hidden": 128, "hidden_layers": 2, "batch_size": 50}
SETTINGS = {  # task, task parameters, epochs, validation score, test score
    "regression": ("ltsf", REGRESSION, {"quick": 8, "full": 20}, "val_mse", "metric_mse"),
    "classification": ("imagenet", CLASSIFICATION, {"quick": 8, "full": 30}, "val_top1", "metric_top1"),
}
ROWS = {"quick": 1500, "full": 3000}


def build_specs(args, setting: str) -> list:
    """Seed by seed (a finished seed is a complete table row when the run is cut short)."""
    mode = "quick" if args.quick else "full"
    task, params, epochs, _, _ = SETTINGS[setting]
    params = {**params, "n_rows": ROWS[mode]} if task == "ltsf" else params
    return [resolve(RunSpec(task=task, preset="tiny", method=method, seed=seed, task_params=params,
                            method_params={"lr": lr}, budget={"epochs": epochs[mode]}, campaign="seed-f3",
                            timeout_s=common.TIMEOUT_S))
            for seed in common.seeds(args) for method in METHODS for lr in LR_GRID[mode]]


def best_per_method(rows, setting: str):
    """Each method's lr with the best median validation score, and that lr's test errors
    (MSE; 1 − top-1 for classification)."""
    _, _, _, val, test = SETTINGS[setting]
    ok = common.ok(rows).copy()
    if ok.empty:
        return {}
    ok["lr"] = ok["method_params"].map(lambda p: json.loads(p)["lr"])
    sign = -1.0 if val == "val_top1" else 1.0
    best = {}
    for method, g in ok.groupby("method"):
        lr = (sign * g.groupby("lr")[val].median()).idxmin()
        chosen = g[g["lr"] == lr].set_index("seed")[test]
        best[method] = 1.0 - chosen if val == "val_top1" else chosen
    return best


def gap_closed(best, method: str, baseline: str) -> list[float]:
    e_m, e_b, e_bp = best[method], best[baseline], best["backprop"]
    seeds = e_m.index.intersection(e_b.index).intersection(e_bp.index)
    return [float((e_b[s] - e_m[s]) / (e_b[s] - e_bp[s])) for s in seeds]


def main() -> None:
    p = common.parser(__doc__, "f3")
    p.add_argument("--setting", choices=("both", *SETTINGS), default="both")
    args = p.parse_args()
    for setting in SETTINGS if args.setting == "both" else (args.setting,):
        specs = build_specs(args, setting)
        rows = common.run_specs(specs, args)
        print(f"\n{setting}\n" + common.table(rows, specs))
        best = best_per_method(rows, setting)
        for method, err in best.items():
            print(f"best lr test error {method}: " + ", ".join(f"seed {s}: {v:.4f}" for s, v in err.items()))
        suffix = "_cls" if setting == "classification" else ""
        if set(METHODS) <= best.keys():
            print(common.headline(f"gap_closed_vs_drtp{suffix}", gap_closed(best, "f3", "drtp")))
            print(common.headline(f"gap_closed_vs_llo{suffix}", gap_closed(best, "f3", "llo")))
            print(common.headline(f"gap_closed_dfa_vs_llo{suffix}", gap_closed(best, "dfa", "llo")))


if __name__ == "__main__":
    main()
