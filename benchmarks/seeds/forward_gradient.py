"""Multi-tangent forward gradients seed benchmark: do more tangents help, does projection beat the mean?

Two parts, as the paper's two questions:

1. Approximation (one LTSF batch, the initial MLP, the estimator computed from the true gradient
   so that only the combination is measured): mean cosine to the true gradient over draws for
   k ∈ {1, 4, 16, 64} and k = n_max (the largest tensor: per tensor the projection is then exact),
   mean vs projection, per tensor (the paper's) and over all parameters at once (global).
2. Optimisation (through the harness, forward mode, plain SGD as in the paper): validation MSE
   after a fixed number of steps for mean and projection at each k, each at its best learning
   rate from a per-method grid (the projection's rates are ~100x the mean's, as in the paper).

    .venv/bin/python benchmarks/seeds/forward_gradient.py --quick
    .venv/bin/python benchmarks/seeds/forward_gradient.py --results /tmp/fg-full

Headlines: ``cosine_ratio_projection_mean_k16`` (per tensor), ``cosine_gain_k64_over_k1``
(projection, per tensor), and from training ``mse_ratio_projection_mean_k<k>`` (< 1: projection
better) and ``mse_ratio_k<max>_over_k1_<combine>`` (< 1: more tangents help); median and range
over seeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from joulebench.harness.registry import registry  # noqa: E402
from joulebench.harness.spec import RunSpec, resolve  # noqa: E402
from joulebench.methods.forward_gradient import weight_forward_gradient  # noqa: E402

TASK = {"model": "mlp"}
KS = {"quick": (1, 16), "full": (1, 4, 16, 64)}
LR_GRID = {"mean": {"quick": (1e-3, 1e-2), "full": (1e-3, 1e-2)},
           "projection": {"quick": (0.3, 3.0), "full": (0.3, 3.0)}}
STEPS = {"quick": 60, "full": 150}
"""Full: 3 seeds × (2 backprop + 2 combinations × 4 k × 2 lr) = 54 runs, sized for a shared 2-core
machine at a load of ~15 (niced); the paper trains 200 epochs."""


class _Loss(nn.Module):
    """The task loss of ``model`` as a module of the model's parameters (for functional_call)."""

    def __init__(self, task, model: nn.Module) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, batch):
        return self.task.loss(self.model, batch)


def approximation(seed: int, ks: list[int], draws: int) -> dict[tuple[str, str, int | str], float]:
    """Mean cosine to the true gradient per (scope, combine, k); k "n_max" is the largest tensor's
    size (one draw: the per-tensor projection is then exact)."""
    spec = resolve(RunSpec(task="ltsf", preset="tiny", task_params=TASK, seed=seed))
    torch.manual_seed(seed)
    task = registry().task("ltsf")(spec.task_params, "tiny", seed, torch.device("cpu"))
    task.setup()
    model = task.build_model()
    batch = next(iter(task.train_loader(generator=torch.Generator().manual_seed(seed))))
    wrapper = _Loss(task, model)
    names = ["model." + n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]

    def fn(*ps):
        return torch.func.functional_call(wrapper, dict(zip(names, ps, strict=True)), (batch,))

    true = torch.cat([g.reshape(-1) for g in torch.autograd.grad(fn(*params), params)])
    n_max = max(p.numel() for p in params)
    out = {}
    for scope in ("tensor", "global"):
        for combine in ("mean", "projection"):
            gen = torch.Generator().manual_seed(1000 + seed)
            for k in [*ks, "n_max"]:
                total = 0.0
                repeats = 1 if k == "n_max" else draws
                for _ in range(repeats):
                    est = weight_forward_gradient(fn, params, k=n_max if k == "n_max" else k,
                                                  combine=combine, scope=scope,
                                                  generator=gen, source="backprop")[1]
                    flat = torch.cat([g.reshape(-1) for g in est])
                    total += float(nn.functional.cosine_similarity(flat, true, dim=0))
                out[scope, combine, k] = total / repeats
    return out


def training_specs(args) -> list:
    mode = "quick" if args.quick else "full"
    common_kw = dict(task="ltsf", preset="tiny", task_params=TASK, budget={"steps": STEPS[mode]},
                     campaign="seed-forward-gradient", timeout_s=common.TIMEOUT_S)
    out = []
    for seed in common.seeds(args):
        for lr in (0.01, 0.1):
            out.append(resolve(RunSpec(**common_kw, method="backprop", seed=seed,
                                       method_params={"optimizer": "sgd", "momentum": 0.0, "lr": lr})))
        for combine in ("mean", "projection"):
            for k in KS[mode]:
                for lr in LR_GRID[combine][mode]:
                    out.append(resolve(RunSpec(**common_kw, method="forward_gradient", seed=seed,
                                               method_params={"combine": combine, "tangents": k,
                                                              "lr": lr})))
    return out


def best_val(rows) -> dict[tuple[str, int], dict[int, float]]:
    """(combine, k) → seed → val MSE at the lr with the best median val MSE over seeds."""
    ok = common.ok(rows).copy()
    ok = ok[ok["method"] == "forward_gradient"]
    params = ok["method_params"].map(json.loads)
    ok["combine"], ok["k"], ok["lr"] = (params.map(lambda p: p["combine"]), params.map(lambda p: p["tangents"]),
                                        params.map(lambda p: p["lr"]))
    out = {}
    for (combine, k), g in ok.groupby(["combine", "k"]):
        lr = g.groupby("lr")["val_mse"].median().idxmin()
        out[combine, int(k)] = g[g["lr"] == lr].set_index("seed")["val_mse"].to_dict()
    return out


def ratios(a: dict[int, float], b: dict[int, float]) -> list[float]:
    return [a[s] / b[s] for s in a if s in b]


def main() -> None:
    p = common.parser(__doc__, "forward-gradient")
    p.add_argument("--draws", type=int, default=None, help="estimates per cosine (default 10 quick, 40 full)")
    p.add_argument("--skip-approximation", action="store_true",
                   help="only the training part (resuming it; the cosines take minutes)")
    args = p.parse_args()
    mode = "quick" if args.quick else "full"
    seeds = common.seeds(args)
    ks = list(KS["full"])
    draws = args.draws or (10 if args.quick else 40)
    if args.skip_approximation:
        cos = {}
    else:
        cos = {seed: approximation(seed, ks, draws) for seed in seeds}
        print_approximation(cos, seeds, ks)
    specs = training_specs(args)
    rows = common.run_specs(specs, args)
    print(common.table(rows, specs))
    if cos:
        print_cosine_headlines(cos, seeds)
    training_headlines(rows, mode)


def print_approximation(cos, seeds, ks) -> None:
    print("| scope | combine | " + " | ".join(f"k={k}" for k in ks) + " | k=n_max |")
    print("|---|---|" + "---|" * (len(ks) + 1))
    for scope in ("tensor", "global"):
        for combine in ("mean", "projection"):
            cells = [common.median_range(cos[s][scope, combine, k] for s in seeds)[0] for k in [*ks, "n_max"]]
            print(f"| {scope} | {combine} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


def print_cosine_headlines(cos, seeds) -> None:
    print(common.headline("cosine_ratio_projection_mean_k16",
                          [cos[s]["tensor", "projection", 16] / cos[s]["tensor", "mean", 16] for s in seeds]))
    print(common.headline("cosine_ratio_projection_mean_k16_global",
                          [cos[s]["global", "projection", 16] / cos[s]["global", "mean", 16] for s in seeds]))
    print(common.headline("cosine_gain_k64_over_k1",
                          [cos[s]["tensor", "projection", 64] / cos[s]["tensor", "projection", 1] for s in seeds]))


def training_headlines(rows, mode: str) -> None:
    best = best_val(rows)
    for k in KS[mode]:
        if ("mean", k) in best and ("projection", k) in best:
            print(common.headline(f"mse_ratio_projection_mean_k{k}", ratios(best["projection", k], best["mean", k])))
    top = max(KS[mode])
    for combine in ("mean", "projection"):
        if (combine, top) in best and (combine, 1) in best:
            print(common.headline(f"mse_ratio_k{top}_over_k1_{combine}", ratios(best[combine, top], best[combine, 1])))


if __name__ == "__main__":
    main()
