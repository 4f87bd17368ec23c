"""OIALR seed benchmark: trainable parameters and quality against backprop on the LTSF transformer.

The authors' headline (Autoformer on ETTm2): MSE 0.269 at 3.2 % of the parameters trainable, against
0.274–0.324 for full-rank training. Here, at CPU scale: the LTSF vanilla transformer on the
synthetic series, Adam, the same budget for every method (quick: 3 epochs; full: 10), OIALR as the
authors run it (stability trigger at 0.99, checked layers growing 10 % per check from the output
side, first and last layers full-rank, their cut) and the earlier rules as a named variant
(``trigger=schedule, cut=max_cut, keep_full_rank=none``).

    .venv/bin/python benchmarks/seeds/oialr.py --quick
    .venv/bin/python benchmarks/seeds/oialr.py --results /tmp/oialr-full

Headlines (median and range over seeds): ``trainable_fraction`` and ``rank_fraction`` of OIALR at
the end, ``mse_ratio_oialr_backprop`` (test MSE; the paper: 0.269 / 0.274–0.324 = 0.83–0.98), and
the same three for the earlier variant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from joulebench.harness.spec import RunSpec, resolve  # noqa: E402

TASK = {"model": "transformer", "seq_len": 48, "label_len": 24, "pred_len": 24, "d_model": 64,
        "d_ff": 128, "e_layers": 2, "d_layers": 1, "n_rows": 1200}
EPOCHS = {"quick": 3, "full": 10}  # full: sized for ~30 min of a shared, niced 2-core machine
VARIANTS = {"authors": {}, "earlier": {"trigger": "schedule", "cut": "max_cut", "keep_full_rank": "none"}}


def build_specs(args) -> list:
    mode = "quick" if args.quick else "full"
    kw = dict(task="ltsf", preset="tiny", task_params=TASK, budget={"epochs": EPOCHS[mode]},
              campaign="seed-oialr", method_params={"lr": 1e-3}, timeout_s=common.TIMEOUT_S)
    out = []
    for seed in common.seeds(args):
        out.append(resolve(RunSpec(**kw, method="backprop", seed=seed)))
        for params in VARIANTS.values():
            out.append(resolve(RunSpec(**{**kw, "method_params": {"lr": 1e-3, **params}},
                                       method="oialr", seed=seed)))
    return out


def variant(params_json: str) -> str:
    params = json.loads(params_json)
    return "earlier" if params.get("trigger") == "schedule" else "authors"


def main() -> None:
    args = common.parser(__doc__, "oialr").parse_args()
    specs = build_specs(args)
    rows = common.run_specs(specs, args)
    print(common.table(rows, specs))
    ok = common.ok(rows)
    if ok.empty:
        return
    bp = ok[ok["method"] == "backprop"].set_index("seed")["metric_mse"]
    oialr = ok[ok["method"] == "oialr"].copy()
    oialr["variant"] = oialr["method_params"].map(variant)
    for name, g in oialr.groupby("variant"):
        g = g.set_index("seed")
        suffix = "" if name == "authors" else "_earlier"
        print(common.headline(f"trainable_fraction{suffix}", g["x_trainable_fraction"]))
        print(common.headline(f"rank_fraction{suffix}", g["x_rank_fraction"]))
        print(common.headline(f"converted_layers{suffix}", g["x_converted_layers"]))
        print(common.headline(f"mse_ratio_oialr_backprop{suffix}",
                              [g.loc[s, "metric_mse"] / bp[s] for s in g.index if s in bp.index]))


if __name__ == "__main__":
    main()
