"""F³ seed benchmark: how much of the gap between DRTP/LLO and backprop F³ closes (paper: up to 96 %).

The paper's regression setting at CPU scale: LTSF univariate (``features=S``), a short horizon,
the channel-independent MLP with Tanh hidden layers (``activation=tanh`` for every method, so
backprop and LLO train the same network the feedback methods train), Adam, a learning-rate grid
per method (best by median validation MSE over seeds, then scored on test), enough epochs for the
feedback methods' loss to flatten (quick: 8, full: 40; the paper runs 100–500 on larger data).

    .venv/bin/python benchmarks/seeds/f3.py --quick
    .venv/bin/python benchmarks/seeds/f3.py --results /tmp/f3-full

Headlines (per seed, each method at its best lr; median and range over seeds):
``gap_closed_vs_drtp`` and ``gap_closed_vs_llo`` = (E_baseline − E_F³) / (E_baseline − E_BP), and
``gap_closed_dfa_vs_llo`` for comparison. Classification (the paper's second table) is not run
here: the project's only classification task with a block model is the ImageNet ResNet, not the
paper's fully connected network; it is left out rather than run on a different architecture.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from joulebench.harness.spec import RunSpec, resolve  # noqa: E402

METHODS = ("backprop", "f3", "dfa", "drtp", "llo")
LR_GRID = {"quick": (3e-4, 3e-3), "full": (3e-4, 1e-3, 3e-3, 1e-2)}
EPOCHS = {"quick": 8, "full": 40}
TASK = {"model": "mlp", "features": "S", "activation": "tanh", "seq_len": 48, "pred_len": 12,
        "label_len": 0, "d_ff": 128, "e_layers": 2, "batch_size": 50}
ROWS = {"quick": 1500, "full": 6000}


def build_specs(args) -> list:
    mode = "quick" if args.quick else "full"
    task = {**TASK, "n_rows": ROWS[mode]}
    out = []
    for method in METHODS:
        for lr in LR_GRID[mode]:
            for seed in common.seeds(args):
                out.append(resolve(RunSpec(task="ltsf", preset="tiny", method=method, seed=seed,
                                           task_params=task, method_params={"lr": lr},
                                           budget={"epochs": EPOCHS[mode]},
                                           campaign="seed-f3")))
    return out


def best_per_method(rows):
    """Each method's lr with the lowest median validation MSE, and that lr's rows."""
    ok = common.ok(rows).copy()
    ok["lr"] = ok["method_params"].map(lambda p: __import__("json").loads(p)["lr"])
    best = {}
    for method, g in ok.groupby("method"):
        lr = g.groupby("lr")["val_mse"].median().idxmin()
        best[method] = g[g["lr"] == lr].set_index("seed")["metric_mse"]
    return best


def gap_closed(best, method: str, baseline: str) -> list[float]:
    e_m, e_b, e_bp = best[method], best[baseline], best["backprop"]
    seeds = e_m.index.intersection(e_b.index).intersection(e_bp.index)
    return [float((e_b[s] - e_m[s]) / (e_b[s] - e_bp[s])) for s in seeds]


def main() -> None:
    args = common.parser(__doc__, "f3").parse_args()
    specs = build_specs(args)
    rows = common.run_specs(specs, args)
    print(common.table(rows, specs))
    best = best_per_method(rows)
    for method, mse in best.items():
        print(f"best lr test mse {method}: " + ", ".join(f"seed {s}: {v:.4f}" for s, v in mse.items()))
    if {"backprop", "f3", "drtp", "llo", "dfa"} <= best.keys():
        print(common.headline("gap_closed_vs_drtp", gap_closed(best, "f3", "drtp")))
        print(common.headline("gap_closed_vs_llo", gap_closed(best, "f3", "llo")))
        print(common.headline("gap_closed_dfa_vs_llo", gap_closed(best, "dfa", "llo")))


if __name__ == "__main__":
    main()
