"""Multi-tangent forward gradients seed benchmark: do more tangents help, does projection beat the mean?

Two parts, as the paper's two questions:

1. Approximation (one LTSF batch, the initial MLP, the estimator computed from the true gradient
   so that only the combination is measured): mean cosine to the true gradient over draws for
   k ∈ {1, 4, 16, 64} and k = n_max (the largest tensor: per tensor the projection is then exact),
   mean vs projection, weight perturbation per tensor (the paper's) and over all parameters at
   once (global), and activity perturbation as in the paper (each Linear's outputs, the tangent
   shared by the batch, one derivative per sample, per layer; n_max: the widest layer's output).
2. Optimisation (through the harness, forward mode, plain SGD as in the paper): validation MSE
   after a fixed number of steps for mean and projection at each k, weight and activity
   perturbation, each at its best learning rate from a per-method grid (the projection's rates
   are ~100x the mean's, as in the paper).

    .venv/bin/python benchmarks/seeds/forward_gradient.py --quick
    .venv/bin/python benchmarks/seeds/forward_gradient.py --results /tmp/fg-full

Headlines: ``cosine_ratio_projection_mean_k16`` (per tensor), ``cosine_gain_k64_over_k1``
(projection, per tensor), and from training ``mse_ratio_projection_mean_k<k>`` (< 1: projection
better) and ``mse_ratio_k<max>_over_k1_<combine>`` (< 1: more tangents help); the same with the
suffix ``_activity`` for activity perturbation; median and range over seeds.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from joulebench.harness.registry import registry  # noqa: E402
from joulebench.harness.spec import RunSpec, resolve  # noqa: E402
from joulebench.methods.forward_gradient import (  # noqa: E402
    model_activity_gradient,
    weight_forward_gradient,
)

TASK = {"model": "mlp"}
KS = {"quick": (1, 16), "full": (1, 4, 16, 64)}
PERTURBATIONS = ("weight", "activity")
"""activity: the paper's activity perturbation (perturb=activity; per layer, shared tangent)."""
LR_CENTRE = {("weight", "mean"): {1: 0.03, 4: 0.1, 16: 0.1, 64: 0.3},
             ("weight", "projection"): {1: 10.0, 4: 10.0, 16: 10.0, 64: 3.0},
             ("activity", "mean"): {1: 0.03, 4: 0.1, 16: 0.3, 64: 1.0},
             ("activity", "projection"): {1: 10.0, 4: 10.0, 16: 10.0, 64: 3.0}}
"""Each row's best rate in a sweep (seed 0, 60 steps, rates 1e-3…1e3 a decade apart, then the
half decades around each best; 2026-12-02): the grid is this centre and a half decade either
side (:data:`LR_STEPS`), so the best rate is inside it unless the budget or the seed moves it
(the edge lines after the training table say where it did). The mean's rate grows with k (its
noise falls as 1/k), the projection's stays ~10 (its length is ~√(k/n) of the gradient's per
tensor): projection/mean 333x at k = 1, 10x at k = 64 (the paper: about 100x). At the old lr
ceiling (10) the projection's grids could not reach past their best."""
LR_STEPS = (1 / 3, 1.0, 3.0)
BACKPROP_LRS = (0.1, 0.3, 1.0)
"""Plain SGD backprop at the same budget, for reference: its best rate in the sweep was 1.0,
backprop's lr ceiling, so that row sits at the edge by construction (a core parameter)."""


FULL_BELOW = {("weight", "mean", 1), ("weight", "mean", 4), ("activity", "mean", 64),
              ("activity", "projection", 16)}
"""Rows whose best rate the full mode's 150 steps moved to their 60-step grid's bottom (seeds
0–2, 2026-12-02): in full mode they also run a half decade below it (the grid's rates are the
sweep's; a longer budget wants smaller steps)."""


def lr_grid(perturb: str, combine: str, k: int, mode: str = "quick") -> tuple[float, ...]:
    """The row's rates: its sweep centre times :data:`LR_STEPS`, rounded to two digits, and in
    full mode one step further down for the rows of :data:`FULL_BELOW`."""
    centre = LR_CENTRE[perturb, combine][k]
    steps = (LR_STEPS[0] / 3, *LR_STEPS) if mode == "full" and (perturb, combine, k) in FULL_BELOW else LR_STEPS
    return tuple(float(f"{centre * f:.2g}") for f in steps)


STEPS = {"quick": 60, "full": 150}
"""Full: 3 seeds × (3 backprop + 2 perturbations × 2 combinations × 4 k × 3 lr + 4 rates of
:data:`FULL_BELOW`) = 165 runs; the paper trains 200 epochs."""


class _Loss(nn.Module):
    """The task loss of ``model`` as a module of the model's parameters (for functional_call)."""

    def __init__(self, task, model: nn.Module) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, batch):
        return self.task.loss(self.model, batch)


Cosines = dict[tuple[str, str, "int | str"], float]
"""(perturbation scope, combine, k) → mean cosine to the true gradient; scope ``tensor`` and
``global`` perturb the weights, ``activity`` the Linear outputs (per layer, shared tangent)."""


def approximation(seed: int, ks: list[int], draws: int) -> Cosines:
    """Mean cosine to the true gradient per (scope, combine, k) on one batch of the initial model;
    k "n_max" is the size where the per-part projection is exact (one draw): the largest tensor
    for weight perturbation, the widest layer's per-sample output for activity perturbation."""
    spec = resolve(RunSpec(task="ltsf", preset="tiny", task_params=TASK, seed=seed))
    torch.manual_seed(seed)
    task = registry().task("ltsf")(spec.task_params, "tiny", seed, torch.device("cpu"))
    task.setup()
    model = task.build_model()
    batch = next(iter(task.train_loader(generator=torch.Generator().manual_seed(seed))))
    params = list(model.parameters())
    true = flat(torch.autograd.grad(task.loss(model, batch), params))
    out = weight_cosines(task, model, batch, true, seed, ks, draws)
    out.update(activity_cosines(task, model, batch, true, seed, ks, draws))
    return out


def flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(nn.functional.cosine_similarity(a, b, dim=0))


def weight_cosines(task, model, batch, true, seed: int, ks: list[int], draws: int) -> Cosines:
    """Weight perturbation, per tensor (the paper's) and over all parameters at once."""
    wrapper = _Loss(task, model)
    names = ["model." + n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]

    def fn(*ps):
        return torch.func.functional_call(wrapper, dict(zip(names, ps, strict=True)), (batch,))

    n_max = max(p.numel() for p in params)
    out = {}
    for scope in ("tensor", "global"):
        for combine in ("mean", "projection"):
            gen = torch.Generator().manual_seed(1000 + seed)
            for k in [*ks, "n_max"]:
                repeats = 1 if k == "n_max" else draws
                out[scope, combine, k] = sum(
                    cosine(flat(weight_forward_gradient(fn, params, k=n_max if k == "n_max" else k,
                                                        combine=combine, scope=scope, generator=gen,
                                                        source="backprop")[1]), true)
                    for _ in range(repeats)) / repeats
    return out


def activity_cosines(task, model, batch, true, seed: int, ks: list[int], draws: int) -> Cosines:
    """Activity perturbation as in the paper: per layer, each layer's tangent shared by the batch,
    one derivative per sample (the estimator from the true output gradients)."""
    params = list(model.parameters())

    def estimate(k: int, combine: str, gen: torch.Generator):
        _, grads, widths = model_activity_gradient(
            model, lambda: task.sample_losses(model, batch), k=k, combine=combine,
            distribution="gaussian", generator=gen, source="backprop", scope="tensor", tangent="shared")
        missing = [i for i, p in enumerate(params) if p not in grads]
        if missing:
            raise RuntimeError(f"activity perturbation left parameters {missing} without a gradient")
        return flat(grads[p] for p in params), widths

    n_max = max(estimate(1, "mean", torch.Generator().manual_seed(0))[1])
    out = {}
    for combine in ("mean", "projection"):
        gen = torch.Generator().manual_seed(2000 + seed)
        for k in [*ks, "n_max"]:
            repeats = 1 if k == "n_max" else draws
            out["activity", combine, k] = sum(
                cosine(estimate(n_max if k == "n_max" else k, combine, gen)[0], true)
                for _ in range(repeats)) / repeats
    return out


def training_specs(args) -> list:
    mode = "quick" if args.quick else "full"
    common_kw = dict(task="ltsf", preset="tiny", task_params=TASK, budget={"steps": STEPS[mode]},
                     campaign="seed-forward-gradient", timeout_s=common.TIMEOUT_S)
    out = []
    for seed in common.seeds(args):
        for lr in BACKPROP_LRS:
            out.append(resolve(RunSpec(**common_kw, method="backprop", seed=seed,
                                       method_params={"optimizer": "sgd", "momentum": 0.0, "lr": lr})))
        for perturb in PERTURBATIONS:
            for combine in ("mean", "projection"):
                for k in KS[mode]:
                    for lr in lr_grid(perturb, combine, k, mode):
                        extra = {"perturb": "activity"} if perturb == "activity" else {}
                        out.append(resolve(RunSpec(**common_kw, method="forward_gradient", seed=seed,
                                                   method_params={"combine": combine, "tangents": k,
                                                                  "lr": lr, **extra})))
    return out


def tagged(rows):
    """The forward-gradient rows that score their rate (ok, or diverged with val MSE inf: see
    :func:`common.scored`) with their perturbation, combination, k and lr as columns."""
    ok = common.scored(rows, ["val_mse"], math.inf).copy()
    if ok.empty:
        return ok
    ok = ok[ok["method"] == "forward_gradient"]
    params = ok["method_params"].map(json.loads)
    ok["perturb"] = params.map(lambda p: p.get("perturb", "weight"))
    ok["combine"], ok["k"], ok["lr"] = (params.map(lambda p: p["combine"]), params.map(lambda p: p["tangents"]),
                                        params.map(lambda p: p["lr"]))
    return ok


Row = tuple[str, str, int]
"""(perturb, combine, k): one line of the training table."""


def best_lr(rows) -> dict[Row, tuple[float, tuple[float, ...]]]:
    """Row → (the lr with the best median val MSE over seeds, the rates stored for that row)."""
    out = {}
    for (perturb, combine, k), g in tagged(rows).groupby(["perturb", "combine", "k"]):
        medians = g.groupby("lr")["val_mse"].median()
        out[perturb, combine, int(k)] = (float(medians.idxmin()), tuple(sorted(float(r) for r in medians.index)))
    return out


def edge_rows(best: dict[Row, tuple[float, tuple[float, ...]]]) -> list[tuple[str, str, int, float, str]]:
    """The rows whose best rate is the lowest or highest of their grid: their MSE is the grid's,
    not the method's (a rate beyond the edge might do better)."""
    out = []
    for (perturb, combine, k), (lr, grid) in sorted(best.items()):
        if len(grid) > 1 and lr in (grid[0], grid[-1]):
            out.append((perturb, combine, k, lr, "top" if lr == grid[-1] else "bottom"))
    return out


def best_val(rows) -> dict[Row, dict[int, float]]:
    """Row → seed → val MSE at the row's best lr (:func:`best_lr`)."""
    ok, best = tagged(rows), best_lr(rows)
    out = {}
    for (perturb, combine, k), g in ok.groupby(["perturb", "combine", "k"]):
        lr = best[perturb, combine, int(k)][0]
        out[perturb, combine, int(k)] = g[g["lr"] == lr].set_index("seed")["val_mse"].to_dict()
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
    specs = training_specs(args)  # before the cosines: a spec out of range fails at once
    if args.skip_approximation:
        cos = {}
    else:
        cos = {seed: approximation(seed, ks, draws) for seed in seeds}
        print_approximation(cos, seeds, ks)
    rows = common.run_specs(specs, args)
    print(common.table(rows, specs))
    if cos:
        print_cosine_headlines(cos, seeds)
    training_headlines(rows, mode)


APPROXIMATION_ROWS = (("tensor", "weight, per tensor"), ("global", "weight, global"),
                      ("activity", "activity, per layer"))


def print_approximation(cos, seeds, ks) -> None:
    print("| perturbation | combine | " + " | ".join(f"k={k}" for k in ks) + " | k=n_max |")
    print("|---|---|" + "---|" * (len(ks) + 1))
    for scope, label in APPROXIMATION_ROWS:
        for combine in ("mean", "projection"):
            cells = [common.median_range(cos[s][scope, combine, k] for s in seeds)[0] for k in [*ks, "n_max"]]
            print(f"| {label} | {combine} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


def print_cosine_headlines(cos, seeds) -> None:
    for scope, suffix in (("tensor", ""), ("global", "_global"), ("activity", "_activity")):
        print(common.headline(f"cosine_ratio_projection_mean_k16{suffix}",
                              [cos[s][scope, "projection", 16] / cos[s][scope, "mean", 16] for s in seeds]))
    for scope, suffix in (("tensor", ""), ("activity", "_activity")):
        print(common.headline(f"cosine_gain_k64_over_k1{suffix}",
                              [cos[s][scope, "projection", 64] / cos[s][scope, "projection", 1] for s in seeds]))


def print_rates(rows) -> None:
    """Each row's best rate and grid, then the rows whose best rate is a grid edge (or none)."""
    best = best_lr(rows)
    print("| perturbation | combine | k | best lr | grid |\n|---|---|---|---|---|")
    for (perturb, combine, k), (lr, grid) in sorted(best.items()):
        print(f"| {perturb} | {combine} | {k} | {lr:g} | {', '.join(f'{r:g}' for r in grid)} |")
    edges = edge_rows(best)
    for perturb, combine, k, lr, side in edges:
        print(f"lr at grid edge: {perturb} {combine} k={k} best lr {lr:g} is the grid's {side}")
    if best and not edges:
        print("lr at grid edge: none (every forward-gradient row's best lr is interior)")
    bp = common.scored(rows, ["val_mse"], math.inf)
    bp = bp[bp["method"] == "backprop"] if not bp.empty else bp
    if not bp.empty:
        medians = bp.groupby(bp["method_params"].map(lambda p: json.loads(p)["lr"]))["val_mse"].median()
        print(f"backprop (SGD, reference): best lr {medians.idxmin():g} of {', '.join(f'{r:g}' for r in medians.index)}")


def training_headlines(rows, mode: str) -> None:
    print_rates(rows)
    best = best_val(rows)
    top = max(KS[mode])
    for perturb in PERTURBATIONS:
        suffix = "" if perturb == "weight" else f"_{perturb}"
        for k in KS[mode]:
            if (perturb, "mean", k) in best and (perturb, "projection", k) in best:
                print(common.headline(f"mse_ratio_projection_mean_k{k}{suffix}",
                                      ratios(best[perturb, "projection", k], best[perturb, "mean", k])))
        for combine in ("mean", "projection"):
            if (perturb, combine, top) in best and (perturb, combine, 1) in best:
                print(common.headline(f"mse_ratio_k{top}_over_k1_{combine}{suffix}",
                                      ratios(best[perturb, combine, top], best[perturb, combine, 1])))


if __name__ == "__main__":
    main()
