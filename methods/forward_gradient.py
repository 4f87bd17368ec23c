"""Forward gradients: gradient estimates from directional derivatives along k random tangents.

For a loss f(θ) and tangents v_1..v_k, forward-mode differentiation (``torch.func.jvp``) gives the
directional derivatives d_i = ∇f·v_i without a backward pass. Two ways to combine them:

* ``mean``: ĝ = (1/k) Σ d_i v_i, the mean of k single-tangent forward gradients; unbiased for
  Gaussian and Rademacher tangents (E[v vᵀ] = I).
* ``projection``: ĝ = V (VᵀV)⁻¹ Vᵀ∇f = V G⁻¹ d, the orthogonal projection of the gradient onto
  the span of the tangents (G is the k × k Gram matrix). E[ĝ] = (k/n) ∇f for isotropic tangents;
  ``scaling=unbiased`` multiplies by n/k. With k = n independent tangents ĝ = ∇f exactly.

``perturb=weight`` perturbs the parameters (n = number of trainable parameters); ``perturb=activity``
perturbs the outputs of every ``nn.Linear`` (n = their total size in the batch) and turns the
estimated output gradients into weight gradients locally (ĝ_W = ĝ_zᵀ x).

``gradient_source=backprop`` computes the same estimator from the true gradient (d_i = g·v_i after
one backward pass) for studying the estimator alone; such rows record
``x_gradient_source=backprop-projected`` and are never forward-mode results.

Mean combination draws one tangent at a time and keeps only the running sum; projection keeps the
k tangents it needs for the Gram matrix. Tangents come from a torch.Generator seeded by the run seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.autograd import forward_ad as fwAD

from joulebench.harness.context import TrainContext
from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.registry import register_method
from joulebench.methods.optim import OPTIMIZER_PARAMS, make_optimizer, make_schedule

GRADIENT_SOURCE_LABEL = {"forward": "forward-mode", "backprop": "backprop-projected"}


# -- tangents and combination ------------------------------------------------------------------
def draw_tangent(shape: Sequence[int] | int, distribution: str, generator: torch.Generator,
                 device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One random tangent: standard Gaussian or Rademacher (±1), from ``generator``."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if distribution == "gaussian":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if distribution == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=device)
        return bits.to(dtype).mul_(2).sub_(1)
    raise ValueError(f"unknown tangent distribution {distribution!r}")


def project(tangents: torch.Tensor, directional: torch.Tensor) -> torch.Tensor:
    """V G⁻¹ d for tangents V (k × n) and directional derivatives d (k): the projection of the
    gradient onto span(V). Solved in float64; a singular Gram matrix (k > n, repeated Rademacher
    tangents) falls back to the pseudo-inverse, which still gives the projection."""
    v64 = tangents.double()
    gram = v64 @ v64.T
    d64 = directional.double()
    try:
        alpha = torch.linalg.solve(gram, d64)
        if not torch.isfinite(alpha).all():
            raise RuntimeError("non-finite solution")
    except RuntimeError:
        alpha = torch.linalg.pinv(gram, hermitian=True) @ d64
    return (alpha @ v64).to(tangents.dtype)


class Combiner:
    """Accumulates (tangent, directional derivative) pairs and returns the combined estimate.

    ``mean`` keeps a running sum only; ``projection`` keeps the k tangents for the Gram solve.
    """

    def __init__(self, combine: str, k: int, n: int, scaling: str = "none") -> None:
        if combine not in {"mean", "projection"}:
            raise ValueError(f"unknown combination {combine!r}")
        self.combine, self.k, self.n, self.scaling = combine, k, n, scaling
        self.directional: list[torch.Tensor] = []
        self.tangents: list[torch.Tensor] = []
        self.total: torch.Tensor | None = None

    def add(self, tangent: torch.Tensor, directional: torch.Tensor) -> None:
        self.directional.append(directional.reshape(()).detach())
        if self.combine == "mean":
            term = tangent * directional
            self.total = term if self.total is None else self.total.add_(term)
        else:
            self.tangents.append(tangent)

    def result(self) -> torch.Tensor:
        if self.combine == "mean":
            assert self.total is not None
            return self.total / len(self.directional)
        estimate = project(torch.stack(self.tangents), torch.stack(self.directional))
        if self.scaling == "unbiased" and self.k < self.n:
            estimate = estimate * (self.n / self.k)
        return estimate


def weight_forward_gradient(fn: Callable[..., torch.Tensor], params: Sequence[torch.Tensor], *,
                            k: int, combine: str = "mean", distribution: str = "gaussian",
                            generator: torch.Generator, scaling: str = "none",
                            source: str = "forward", before_call: Callable[[], None] | None = None,
                            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Weight-perturbation estimate of ∇fn(*params): returns (loss, per-parameter estimates).

    ``source="forward"``: k Jacobian-vector products, no backward pass. ``source="backprop"``: the
    same tangents and combination applied to the true gradient from one backward pass.
    ``before_call`` runs before every evaluation of fn (restores the RNG so that dropout draws the
    same mask for every tangent).
    """
    params = tuple(p.detach() for p in params)
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]
    n = sum(sizes)
    device, dtype = params[0].device, params[0].dtype
    combiner = Combiner(combine, k, n, scaling)

    def split(flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.view(s) for t, s in zip(flat.split(sizes), shapes, strict=False))

    loss = None
    true_grad = None
    if source == "backprop":
        leaves = tuple(p.requires_grad_(True) for p in (q.clone() for q in params))
        if before_call:
            before_call()
        loss = fn(*leaves)
        true_grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, leaves)])
        loss = loss.detach()
    elif source != "forward":
        raise ValueError(f"unknown gradient source {source!r}")
    for _ in range(k):
        v = draw_tangent(n, distribution, generator, device, dtype)
        if true_grad is not None:
            d = true_grad @ v
        else:
            if before_call:
                before_call()
            with torch.no_grad():
                loss, d = torch.func.jvp(fn, params, split(v))
        combiner.add(v, d)
    estimate = combiner.result()
    return loss, list(split(estimate))


# -- activity perturbation -----------------------------------------------------------------------
class _LinearTaps:
    """Forward hooks on every nn.Linear: record the layer input and (optionally) perturb the output."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        self.layers = layers
        self.mode: str | None = None  # None: inactive; "tangent": add dual tangents; "grad": keep z
        self.draw: Callable[[torch.Size], torch.Tensor] | None = None
        self.calls: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = []
        self.handles = [m.register_forward_hook(self._hook) for m in layers]

    def _hook(self, module: nn.Linear, args, out):
        if self.mode is None:
            return None
        x = fwAD.unpack_dual(args[0]).primal.detach()
        if self.mode == "tangent":
            primal = fwAD.unpack_dual(out).primal
            u = self.draw(primal.shape)
            self.calls.append((module, x, u))
            return out + fwAD.make_dual(torch.zeros_like(primal), u)
        out.retain_grad()
        self.calls.append((module, x, out))
        return None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _linear_grads(calls: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]],
                  out_grads: list[torch.Tensor]) -> dict[nn.Parameter, torch.Tensor]:
    """Weight and bias gradients of each Linear from (estimated) gradients of its outputs."""
    grads: dict[nn.Parameter, torch.Tensor] = {}
    for (module, x, _), gz in zip(calls, out_grads, strict=False):
        gz2, x2 = gz.reshape(-1, gz.shape[-1]), x.reshape(-1, x.shape[-1])
        pairs = [(module.weight, gz2.T @ x2)]
        if module.bias is not None:
            pairs.append((module.bias, gz2.sum(0)))
        for p, g in pairs:
            grads[p] = grads[p] + g if p in grads else g
    return grads


def activity_forward_gradient(loss_fn: Callable[[], torch.Tensor], taps: _LinearTaps, *, k: int,
                              combine: str, distribution: str, generator: torch.Generator,
                              scaling: str = "none", source: str = "forward",
                              before_call: Callable[[], None] | None = None,
                              ) -> tuple[torch.Tensor, dict[nn.Parameter, torch.Tensor]]:
    """Activity-perturbation estimate: tangents on every Linear output, one jvp per tangent."""
    loss = None
    combiner: Combiner | None = None
    calls: list = []
    if source == "backprop":
        taps.mode, taps.calls = "grad", []
        if before_call:
            before_call()
        loss = loss_fn()
        loss.backward()
        calls = taps.calls
        true = torch.cat([z.grad.reshape(-1) for _, _, z in calls])
        shapes = [z.shape for _, _, z in calls]
        n = true.numel()
        combiner = Combiner(combine, k, n, scaling)
        for _ in range(k):
            u = draw_tangent(n, distribution, generator, true.device, true.dtype)
            combiner.add(u, true @ u)
        loss = loss.detach()
    elif source == "forward":
        taps.mode = "tangent"
        device = taps.layers[0].weight.device
        taps.draw = lambda shape: draw_tangent(shape, distribution, generator, device)
        shapes = []
        for _ in range(k):
            taps.calls = []
            if before_call:
                before_call()
            with torch.no_grad(), fwAD.dual_level():
                dual_loss = loss_fn()
                primal, tangent = fwAD.unpack_dual(dual_loss)
            loss = primal.detach()
            d = tangent if tangent is not None else torch.zeros((), device=device)
            calls = taps.calls
            u = torch.cat([c[2].reshape(-1) for c in calls])
            if combiner is None:
                shapes = [c[2].shape for c in calls]
                combiner = Combiner(combine, k, u.numel(), scaling)
            combiner.add(u, d)
    else:
        raise ValueError(f"unknown gradient source {source!r}")
    taps.mode = None
    assert combiner is not None
    flat = combiner.result()
    sizes = [math.prod(s) for s in shapes]
    out_grads = [g.view(s) for g, s in zip(flat.split(sizes), shapes, strict=False)]
    return loss, _linear_grads(calls, out_grads)


# -- the method ----------------------------------------------------------------------------------
class _LossCall(nn.Module):
    """``task.loss(model, batch)`` as a module, so that functional_call can swap the parameters."""

    def __init__(self, task, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._task = task

    def forward(self, batch):
        return self._task.loss(self.model, batch)


def _rng_restorer(device: torch.device) -> Callable[[], None]:
    """A function that resets the global RNG to its state now (same dropout mask per tangent)."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore() -> None:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)

    return restore


def unsupported_model(model: nn.Module, perturb: str) -> str | None:
    """Why forward gradients cannot train this model, or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            return (f"{name or 'model'} is a BatchNorm that updates running statistics in every "
                    "forward pass (k passes per step would update them k times); use a model "
                    "without BatchNorm or with track_running_stats=False")
    if perturb == "activity":
        in_linear = {id(p) for m in model.modules() if isinstance(m, nn.Linear)
                     for p in m.parameters(recurse=False)}
        outside = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in in_linear]
        if outside:
            return ("activity perturbation trains nn.Linear layers only; trainable parameters "
                    f"outside them: {', '.join(outside[:3])}{' …' if len(outside) > 3 else ''}")
    return None


@register_method
class ForwardGradient(Method):
    name = "forward_gradient"
    description = ("Forward gradients: k random tangents, jvp directional derivatives, mean or "
                   "orthogonal-projection combination; no backward pass")
    params = {
        **OPTIMIZER_PARAMS,
        "lr": Param(1e-4, low=1e-7, high=1.0, log=True),
        "tangents": Param(1, low=1, high=4096, help="k, tangents per step"),
        "combine": Param("mean", choices=("mean", "projection")),
        "distribution": Param("gaussian", choices=("gaussian", "rademacher")),
        "scaling": Param("none", choices=("none", "unbiased"),
                         help="unbiased: projection × n/k (the mean is already unbiased)"),
        "perturb": Param("weight", choices=("weight", "activity")),
        "gradient_source": Param("forward", choices=("forward", "backprop"),
                                 help="backprop: same estimator from the true gradient (study only)"),
        "clip_norm": Param(0.0, low=0.0, high=100.0, help="0: off"),
    }
    requires = frozenset({"functional"})

    def check_model(self, model: nn.Module) -> str | None:
        return unsupported_model(model, self.hp.perturb)

    def train(self, ctx: TrainContext) -> None:
        hp = self.hp
        if ctx.dist.world_size > 1:
            raise RuntimeError("forward_gradient runs in a single process (world_size 1)")
        model = ctx.model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        opt = make_optimizer([p for _, p in named], hp, ctx.global_batch)
        schedule = make_schedule(opt, hp, ctx.planned_steps, ctx.steps_per_epoch)
        generator = torch.Generator(device=ctx.device).manual_seed(10_007 * ctx.spec.seed + 1)
        ctx.record(gradient_source=GRADIENT_SOURCE_LABEL[hp.gradient_source])
        n_perturbed = None
        wrapper = _LossCall(ctx.task, model)
        keys = ["model." + n for n, _ in named]
        taps = _LinearTaps([m for m in model.modules() if isinstance(m, nn.Linear)]) \
            if hp.perturb == "activity" else None
        common = dict(k=hp.tangents, combine=hp.combine, distribution=hp.distribution,
                      generator=generator, scaling=hp.scaling, source=hp.gradient_source)
        try:
            for batch in ctx.batches():
                restore = _rng_restorer(ctx.device)
                opt.zero_grad(set_to_none=True)
                if taps is None:
                    def fn(*ps, batch=batch):
                        return torch.func.functional_call(wrapper, dict(zip(keys, ps, strict=False)), (batch,))

                    loss, grads = weight_forward_gradient(fn, [p for _, p in named],
                                                          before_call=restore, **common)
                    for (_, p), g in zip(named, grads, strict=False):
                        p.grad = g
                    n_perturbed = sum(p.numel() for _, p in named)
                else:
                    loss, grads = activity_forward_gradient(
                        lambda batch=batch: ctx.loss(model, batch), taps, before_call=restore,
                        **common)
                    for _, p in named:
                        p.grad = grads.get(p)
                    n_perturbed = sum(c[2].numel() for c in taps.calls)
                if hp.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_([p for _, p in named], hp.clip_norm)
                opt.step()
                if schedule is not None:
                    schedule.step()
                ctx.step(loss, batch)
            ctx.record(n_perturbed=n_perturbed)
        finally:
            if taps is not None:
                taps.remove()
