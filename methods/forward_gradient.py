"""Forward gradients: gradient estimates from directional derivatives along k random tangents.

For a loss f(θ) and tangents v_1..v_k, forward-mode differentiation (``torch.func.jvp``) gives the
directional derivatives d_i = ∇f·v_i without a backward pass. Two ways to combine them:

* ``mean``: ĝ = (1/k) Σ d_i v_i, the mean of k single-tangent forward gradients; unbiased for
  Gaussian and Rademacher tangents (E[v vᵀ] = I).
* ``projection``: ĝ = V (VᵀV)⁻¹ Vᵀ∇f = V G⁻¹ d, the orthogonal projection of the gradient onto
  the span of the tangents (G is the k × k Gram matrix). With k = n independent tangents ĝ = ∇f.

The authors' setup ("Beyond Backpropagation: Optimization with Multi-Tangent Forward Gradients",
Flügel et al., code Helmholtz-AI-Energy/frog: ``forward_gradient/aggregation.py``,
``nn_training/fg_models.py``, ``nn_training/simfg_models.py``, ``nn_training/configs/defaults.ini``,
``lrs/fc_nns.csv``): Gaussian tangents, not normalised; the projection per parameter tensor
(``projection_scope=tensor``: each tensor's slice of the tangents with its own directional
derivative, which their simulated runs call local jvps; their forward-mode model projects per
tensor with the network-wide derivative and leaves a whole-network projection as a to-do);
no length correction by default, optionally division by the expected length (E[χ_k]/E[χ_n] for
the projection: ``scaling=expected_length``); plain SGD without momentum with a learning rate
searched per model, method and k — about 1e-4–3e-3 for the mean and 0.04–0.46 for the
projection on MNIST MLPs (two orders of magnitude apart); fully connected nets of width
256–4096, k ∈ {1, 2, 4, 16}, 200 epochs.

Here: ``projection_scope=tensor`` is the default; ``global`` (one projection over all parameters,
which for k ≪ n is a rescaled mean) is the earlier behaviour, kept as an option. With scope
tensor the forward-mode path runs one jvp per tensor per tangent (T·k passes: exact per-tensor
derivatives at T times the cost; the mean combines per tensor too, so the two combinations are
compared on equal information). ``scaling``: ``none`` (the authors' default),
``expected_length`` (their correction), ``unbiased`` (× n/k, the earlier option). Optimiser:
SGD without momentum by default; tune ``lr`` per combination and k.

``perturb=weight`` perturbs the parameters (n = number of trainable parameters); ``perturb=activity``
perturbs the outputs of every ``nn.Linear`` (n = their total size in the batch) and turns the
estimated output gradients into weight gradients locally (ĝ_W = Σ_b ĝ_z,bᵀ x_b). As in the
paper (``activity_tangent=shared``, the authors' ``ActivityPerturbationLayer``, whose tangent has
one sample's shape and is expanded over the batch, and their simulated model's per-sample jvps),
each layer's k tangents are shaped like one sample's output and shared by every sample, and each
sample has its own directional derivative d_b = ∇_{z_b}L·u (from the task's per-sample losses:
capability ``sample_losses``), so every sample's output gradient is estimated in the same
k-dimensional span (n = the per-sample output size; per layer with scope tensor, which costs
one forward pass per layer and tangent). ``activity_tangent=batch`` (the earlier behaviour, an
option) draws one tangent over the whole batch's activations with one batch-level derivative
(scope global only in forward mode), so n is batch × output size.

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

ACTIVITY_SCOPE = ("activity_tangent=batch takes one directional derivative per tangent over all "
                  "activations: set projection_scope=global")
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
    """V G⁻¹ d for tangents V (k × n) and directional derivatives d (k, or k × B for B samples,
    giving n × B): the projection of the gradient onto span(V). Solved in float64; a singular Gram matrix (k > n, repeated Rademacher
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
    return (v64.T @ alpha).to(tangents.dtype)


def chi_mean(k: int) -> float:
    """E[χ_k], the expected length of a k-dimensional standard Gaussian vector."""
    return math.sqrt(2.0) * math.exp(math.lgamma((k + 1) / 2) - math.lgamma(k / 2))


def length_correction(combine: str, k: int, n: int, scaling: str) -> float:
    """Factor applied to an n-dimensional estimate from k Gaussian tangents.

    ``expected_length`` is the paper's correction: divide by the estimate's expected length for a
    unit gradient — projection: E[χ_k]/E[χ_n] ≈ √(k/n); mean: E|v|² · √(2/(πn)) for k = 1 and
    E|v|² · √((n+k)/(1+k))/n otherwise, with E|v|² = n. ``unbiased`` (the earlier rule, a named
    option) multiplies a projection by n/k so that its expectation is the gradient.
    """
    if scaling == "none" or k >= n and combine == "projection":
        return 1.0
    if scaling == "unbiased":
        return n / k if combine == "projection" else 1.0
    if scaling != "expected_length":
        raise ValueError(f"unknown scaling {scaling!r}")
    if combine == "projection":
        return chi_mean(n) / chi_mean(k)
    shrink = math.sqrt(2 / (math.pi * n)) if k == 1 else math.sqrt((n + k) / (1 + k)) / n
    return 1.0 / (n * shrink)


class Combiner:
    """Accumulates (tangent, directional derivatives) pairs and returns the combined estimate.

    ``segments`` are the sizes of the parameter tensors (or activations) laid end to end in a
    tangent. ``scope="tensor"`` (the paper's per-tensor projection; the authors' code calls it
    local jvps) combines each tensor separately from its own directional derivative ∇f_t·v_t, so
    ``add`` takes one derivative per segment; with k ≥ n_t tangents the tensor's estimate is its
    gradient exactly (the first n_t tangents span it). ``scope="global"`` takes one network-wide
    derivative per tangent and combines the whole vector at once (for k ≪ n a projection is then
    a rescaled mean). ``mean`` keeps a running sum; ``projection`` keeps the tangents for the
    Gram solve. Scaling (:func:`length_correction`) is applied per combined segment.
    """

    def __init__(self, combine: str, k: int, segments: Sequence[int], scaling: str = "none",
                 scope: str = "tensor") -> None:
        if combine not in {"mean", "projection"}:
            raise ValueError(f"unknown combination {combine!r}")
        if scope not in {"tensor", "global"}:
            raise ValueError(f"unknown projection scope {scope!r}")
        self.combine, self.k, self.scaling, self.scope = combine, k, scaling, scope
        self.segments = [int(s) for s in segments]
        self.n = sum(self.segments)
        self.directional: list[torch.Tensor] = []
        self.tangents: list[torch.Tensor] = []
        self.total: torch.Tensor | None = None

    @property
    def parts(self) -> list[int]:
        return self.segments if self.scope == "tensor" else [self.n]

    def add(self, tangent: torch.Tensor, directional: torch.Tensor) -> None:
        """``directional``: one derivative per segment (scope tensor) or one in all (global);
        with a trailing batch axis (segments × B) when each sample has its own derivative along
        the shared tangent, and the result is then n × B."""
        d = directional.detach()
        d = d.reshape(-1) if d.dim() <= 1 else d
        if d.shape[0] != len(self.parts):
            raise ValueError(f"expected {len(self.parts)} directional derivatives, got {d.shape[0]}")
        self.directional.append(d)
        if self.combine == "mean":
            scale = torch.repeat_interleave(d, torch.tensor(self.parts, device=d.device), dim=0)
            term = tangent.reshape(-1, *([1] * (d.dim() - 1))) * scale
            self.total = term if self.total is None else self.total.add_(term)
        else:
            self.tangents.append(tangent)

    def result(self) -> torch.Tensor:
        k = len(self.directional)
        if self.combine == "mean":
            assert self.total is not None
            mean = self.total / k
            return torch.cat([part * length_correction("mean", k, part.shape[0], self.scaling)
                              for part in mean.split(self.parts)])
        tangents, d = torch.stack(self.tangents), torch.stack(self.directional)
        return torch.cat([self._projected(part, d[:, i])
                          for i, part in enumerate(tangents.split(self.parts, dim=1))])

    def _projected(self, tangents: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        k, n = tangents.shape
        if k > n:  # more tangents than dimensions: the first n span the slice
            tangents, d, k = tangents[:n], d[:n], n
        return project(tangents, d) * length_correction("projection", k, n, self.scaling)


def tensor_directional(fn: Callable[..., torch.Tensor], params: tuple[torch.Tensor, ...],
                       tangent: tuple[torch.Tensor, ...], scope: str,
                       before_call: Callable[[], None] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, directional derivatives) by forward mode: one jvp along the whole tangent (global),
    or one per tensor with the other tensors' tangents zero (tensor: T jvps per tangent)."""
    if scope == "global":
        if before_call:
            before_call()
        with torch.no_grad():
            return torch.func.jvp(fn, params, tangent)
    out = []
    loss = None
    for t in range(len(params)):
        only = tuple(v if i == t else torch.zeros_like(v) for i, v in enumerate(tangent))
        if before_call:
            before_call()
        with torch.no_grad():
            loss, d = torch.func.jvp(fn, params, only)
        out.append(d.reshape(()))
    return loss, torch.stack(out)


def weight_forward_gradient(fn: Callable[..., torch.Tensor], params: Sequence[torch.Tensor], *,
                            k: int, combine: str = "mean", distribution: str = "gaussian",
                            generator: torch.Generator, scaling: str = "none",
                            source: str = "forward", before_call: Callable[[], None] | None = None,
                            scope: str = "tensor") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Weight-perturbation estimate of ∇fn(*params): returns (loss, per-parameter estimates).

    ``source="forward"``: Jacobian-vector products (k, or k per tensor with scope tensor), no
    backward pass. ``source="backprop"``: the same tangents and combination applied to the true
    gradient from one backward pass. ``before_call`` runs before every evaluation of fn (restores
    the RNG so that dropout draws the same mask for every tangent).
    """
    params = tuple(p.detach() for p in params)
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]
    n = sum(sizes)
    device, dtype = params[0].device, params[0].dtype
    combiner = Combiner(combine, k, sizes, scaling, scope)

    def split(flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.view(s) for t, s in zip(flat.split(sizes), shapes, strict=True))

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
            d = torch.stack([(g * u).sum() for g, u in
                             zip(true_grad.split(combiner.parts), v.split(combiner.parts), strict=True)])
        else:
            loss, d = tensor_directional(fn, params, split(v), scope, before_call)
        combiner.add(v, d)
    estimate = combiner.result()
    return loss, list(split(estimate))


# -- activity perturbation -----------------------------------------------------------------------
Calls = list[tuple[nn.Linear, torch.Tensor, torch.Tensor]]
"""Per Linear call of one forward pass: (layer, its input, its tangent or output)."""


class _LinearTaps:
    """Forward hooks on every nn.Linear: record each call's input; in ``tangent`` mode add the
    tangent ``tangent(call_index, output_shape)`` returns (None: leave the output alone), in
    ``grad`` mode keep the output's gradient."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        self.layers = layers
        self.mode: str | None = None  # None: inactive; "tangent": add dual tangents; "grad": keep z
        self.tangent: Callable[[int, torch.Size], torch.Tensor | None] | None = None
        self.calls: Calls = []
        self.handles = [m.register_forward_hook(self._hook) for m in layers]

    def _hook(self, module: nn.Linear, args, out):
        if self.mode is None:
            return None
        x = fwAD.unpack_dual(args[0]).primal.detach()
        if self.mode == "tangent":
            primal = fwAD.unpack_dual(out).primal
            u = self.tangent(len(self.calls), primal.shape)
            self.calls.append((module, x, primal if u is None else u))
            return None if u is None else out + fwAD.make_dual(torch.zeros_like(primal), u)
        out.retain_grad()
        self.calls.append((module, x, out))
        return None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _linear_grads(calls: Calls, out_grads: list[torch.Tensor]) -> dict[nn.Parameter, torch.Tensor]:
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


class SharedTangents:
    """The paper's activity tangents: per layer (call order), k tangents shaped like one sample's
    output, drawn on the layer's first call and expanded over the batch, so that every sample is
    perturbed along the same direction. ``index`` picks the tangent of a pass, ``active`` the
    layers perturbed in it (None: all)."""

    def __init__(self, k: int, draw: Callable[[tuple[int, ...]], torch.Tensor]) -> None:
        self.k, self.draw = k, draw
        self.layers: list[torch.Tensor] = []  # per layer: (k, *sample shape)
        self.index = 0
        self.active: set[int] | None = None

    def __call__(self, layer: int, shape: torch.Size) -> torch.Tensor | None:
        if layer == len(self.layers):
            self.layers.append(self.draw((self.k, *shape[1:])))
        if self.active is not None and layer not in self.active:
            return None
        return self.layers[layer][self.index].expand(shape)

    @property
    def sizes(self) -> list[int]:
        return [math.prod(t.shape[1:]) for t in self.layers]

    def flat(self, i: int) -> torch.Tensor:
        """Tangent i of every layer, laid end to end."""
        return torch.cat([t[i].reshape(-1) for t in self.layers])


def _sample_jvp(sample_loss_fn: Callable[[], torch.Tensor],
                before_call: Callable[[], None] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass under the taps' tangents: per-sample losses and their derivatives."""
    if before_call:
        before_call()
    with torch.no_grad(), fwAD.dual_level():
        primal, tangent = fwAD.unpack_dual(sample_loss_fn())
    primal = primal.detach()
    return primal, torch.zeros_like(primal) if tangent is None else tangent


def _shared_directional(sample_loss_fn: Callable[[], torch.Tensor], taps: _LinearTaps,
                        tangents: SharedTangents, scope: str, source: str,
                        before_call: Callable[[], None] | None) -> tuple[torch.Tensor, Calls, torch.Tensor]:
    """(batch loss, calls, derivatives k × parts × B) for shared tangents. Sample b's derivative
    is that of the batch-mean loss through its own outputs, ∇_{z_b}L·u = dℓ_b/B; parts: one per
    layer (scope tensor: forward mode perturbs one layer per pass) or one (global)."""
    if source == "backprop":
        return _shared_simulated(sample_loss_fn, taps, tangents, scope, before_call)
    if source != "forward":
        raise ValueError(f"unknown gradient source {source!r}")
    taps.mode, taps.tangent, taps.calls = "tangent", tangents, []
    tangents.active = set()  # a plain pass: layer inputs, output shapes, tangents drawn
    losses, _ = _sample_jvp(sample_loss_fn, before_call)
    calls, batch = taps.calls, losses.numel()
    groups: list[set[int] | None] = [None] if scope == "global" else [{i} for i in range(len(calls))]
    d = torch.zeros(tangents.k, len(groups), batch, device=losses.device, dtype=losses.dtype)
    for i in range(tangents.k):
        tangents.index = i
        for g, active in enumerate(groups):
            tangents.active, taps.calls = active, []
            d[i, g] = _sample_jvp(sample_loss_fn, before_call)[1] / batch
    return losses.mean(), calls, d


def _shared_simulated(sample_loss_fn: Callable[[], torch.Tensor], taps: _LinearTaps,
                      tangents: SharedTangents, scope: str,
                      before_call: Callable[[], None] | None) -> tuple[torch.Tensor, Calls, torch.Tensor]:
    """The same derivatives from the true per-sample output gradients of one backward pass."""
    taps.mode, taps.calls = "grad", []
    if before_call:
        before_call()
    loss = sample_loss_fn().mean()
    loss.backward()
    calls = taps.calls
    for i, (_, _, z) in enumerate(calls):
        tangents(i, z.shape)
    grads = [z.grad.reshape(z.shape[0], -1) for _, _, z in calls]  # B × n_l each
    d = torch.stack([torch.stack([g @ t[i].reshape(-1) for g, t in zip(grads, tangents.layers, strict=True)])
                     for i in range(tangents.k)])
    return loss.detach(), calls, d.sum(1, keepdim=True) if scope == "global" else d


def _shared_activity_gradient(loss_fn, taps, *, k, combine, scaling, source, before_call,
                              scope, draw) -> tuple[torch.Tensor, Calls, list[torch.Tensor]]:
    """Shared tangents: (loss, calls, per-sample output-gradient estimates shaped like the outputs)."""
    tangents = SharedTangents(k, draw)
    loss, calls, d = _shared_directional(loss_fn, taps, tangents, scope, source, before_call)
    combiner = Combiner(combine, k, tangents.sizes, scaling, scope)
    for i in range(k):
        combiner.add(tangents.flat(i), d[i])
    per_layer = combiner.result().split(tangents.sizes)  # n_l × B each
    return loss, calls, [g.T.reshape(c[2].shape) for g, c in zip(per_layer, calls, strict=True)]


def _batch_activity_gradient(loss_fn, taps, *, k, combine, scaling, source, before_call,
                             scope, draw) -> tuple[torch.Tensor, Calls, list[torch.Tensor]]:
    """One tangent over the whole batch's activations, one batch-level derivative (the earlier
    behaviour): (loss, calls, output-gradient estimates)."""
    loss = None
    combiner: Combiner | None = None
    calls: Calls = []
    device = taps.layers[0].weight.device
    if source == "backprop":
        taps.mode, taps.calls = "grad", []
        if before_call:
            before_call()
        loss = loss_fn()
        loss.backward()
        calls = taps.calls
        true = torch.cat([z.grad.reshape(-1) for _, _, z in calls])
        combiner = Combiner(combine, k, [z.numel() for _, _, z in calls], scaling, scope)
        for _ in range(k):
            u = draw(true.numel())
            combiner.add(u, torch.stack([(g * t).sum() for g, t in zip(
                true.split(combiner.parts), u.split(combiner.parts), strict=True)]))
        loss = loss.detach()
    elif source == "forward":
        if scope != "global":
            raise ValueError(ACTIVITY_SCOPE)
        taps.mode, taps.tangent = "tangent", lambda layer, shape: draw(shape)
        for _ in range(k):
            taps.calls = []
            if before_call:
                before_call()
            with torch.no_grad(), fwAD.dual_level():
                primal, tangent = fwAD.unpack_dual(loss_fn())
            loss = primal.detach()
            calls = taps.calls
            if combiner is None:
                combiner = Combiner(combine, k, [c[2].numel() for c in calls], scaling, scope)
            combiner.add(torch.cat([c[2].reshape(-1) for c in calls]),
                         tangent if tangent is not None else torch.zeros((), device=device))
    else:
        raise ValueError(f"unknown gradient source {source!r}")
    assert combiner is not None
    flat = combiner.result().split(combiner.segments)
    return loss, calls, [g.view(c[2].shape) for g, c in zip(flat, calls, strict=True)]


def activity_forward_gradient(loss_fn: Callable[[], torch.Tensor], taps: _LinearTaps, *, k: int,
                              combine: str, distribution: str, generator: torch.Generator,
                              scaling: str = "none", source: str = "forward",
                              before_call: Callable[[], None] | None = None, scope: str = "tensor",
                              tangent: str = "shared",
                              ) -> tuple[torch.Tensor, dict[nn.Parameter, torch.Tensor]]:
    """Activity-perturbation estimate of the Linear layers' gradients: (loss, {parameter: grad}).

    ``tangent="shared"`` (the paper's): ``loss_fn`` returns the per-sample losses (their mean is
    the loss); ``"batch"``: it returns the batch loss."""
    device = taps.layers[0].weight.device
    build = {"shared": _shared_activity_gradient, "batch": _batch_activity_gradient}.get(tangent)
    if build is None:
        raise ValueError(f"unknown activity tangent {tangent!r}")
    try:
        loss, calls, out_grads = build(
            loss_fn, taps, k=k, combine=combine, scaling=scaling, source=source,
            before_call=before_call, scope=scope,
            draw=lambda shape: draw_tangent(shape, distribution, generator, device))
    finally:
        taps.mode = None
    return loss, _linear_grads(calls, out_grads)


def model_activity_gradient(model: nn.Module, loss_fn: Callable[[], torch.Tensor], **kw
                            ) -> tuple[torch.Tensor, dict[nn.Parameter, torch.Tensor], list[int]]:
    """:func:`activity_forward_gradient` over every nn.Linear of ``model``, the hooks attached for
    this call only: (loss, {parameter: grad}, each Linear call's perturbed size per sample, so
    that a caller can pick k = the widest layer's, where the per-layer projection is exact).
    For studies of the estimator outside a training loop (the seed benchmark)."""
    taps = _LinearTaps([m for m in model.modules() if isinstance(m, nn.Linear)])
    try:
        loss, grads = activity_forward_gradient(loss_fn, taps, **kw)
        widths = [c[2][0].numel() for c in taps.calls]
    finally:
        taps.remove()
    return loss, grads, widths


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


def unsupported_model(model: nn.Module, perturb: str, scope: str = "global",
                      tangent: str = "shared") -> str | None:
    """Why forward gradients cannot train this model (with this perturbation), or None."""
    if perturb == "activity" and tangent == "batch" and scope != "global":
        return ACTIVITY_SCOPE
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


def perturbed_size(calls: Calls, tangent: str) -> int:
    """The tangent's dimension n: the outputs of one sample (shared) or of the batch."""
    return sum(c[2].numel() // (c[2].shape[0] if tangent == "shared" else 1) for c in calls)


@register_method
class ForwardGradient(Method):
    name = "forward_gradient"
    description = ("Forward gradients: k random tangents, jvp directional derivatives, mean or "
                   "orthogonal-projection combination; no backward pass")
    params = {
        **OPTIMIZER_PARAMS,
        # the paper's plain SGD (no momentum), its rate tuned per method and k: a projection's
        # best rate is ~100x the mean's, so tune lr whenever combine or k changes
        "optimizer": Param("sgd", choices=("sgd", "adam", "adamw")),
        "momentum": Param(0.0, low=0.0, high=0.999, help="SGD only"),
        # the ceiling guards against typos, not a tuning range: a projection from k tangents moves
        # ~k/n of the gradient's length (n: a tensor's or a layer's per-sample size), so matching
        # a backprop step of lr 1 at k = 1 on a 10^4-element tensor takes lr ~ 10^4
        "lr": Param(1e-3, low=1e-7, high=1e4, log=True),
        "tangents": Param(1, low=1, high=4096, help="k, tangents per step"),
        "combine": Param("mean", choices=("mean", "projection")),
        "projection_scope": Param("tensor", choices=("tensor", "global"),
                                  help="tensor: project per parameter tensor (the paper's); "
                                       "global: all parameters at once"),
        "distribution": Param("gaussian", choices=("gaussian", "rademacher")),
        "scaling": Param("none", choices=("none", "expected_length", "unbiased"),
                         help="expected_length: divide by the estimate's expected length (the "
                              "paper's correction); unbiased: projection x n/k"),
        "perturb": Param("weight", choices=("weight", "activity")),
        "activity_tangent": Param("shared", choices=("shared", "batch"), applies={"perturb": ("activity",)},
                                  help="shared: each layer's tangent has one sample's shape, shared "
                                       "by the batch, one derivative per sample (the paper's; needs "
                                       "the task's sample_losses); batch: one tangent over the "
                                       "batch's activations, one derivative"),
        "gradient_source": Param("forward", choices=("forward", "backprop"),
                                 help="backprop: same estimator from the true gradient (study only)"),
        "clip_norm": Param(0.0, low=0.0, high=100.0, help="0: off"),
    }
    requires = frozenset({"functional"})

    def check_model(self, model: nn.Module) -> str | None:
        return unsupported_model(model, self.hp.perturb, self.hp.projection_scope, self.activity_tangent)

    @property
    def activity_tangent(self) -> str | None:
        return self.hp.activity_tangent if self.hp.perturb == "activity" else None

    def activity_loss(self, ctx: TrainContext, batch) -> Callable[[], torch.Tensor]:
        """What activity perturbation differentiates: per-sample losses (shared tangent) or the loss."""
        if self.activity_tangent == "batch":
            return lambda: ctx.loss(ctx.model, batch)
        if "sample_losses" not in ctx.task.capabilities_for(ctx.task.hp):
            raise RuntimeError(f"activity_tangent=shared takes one derivative per sample: task "
                               f"{ctx.task.name} does not provide sample_losses (use activity_tangent=batch)")
        return lambda: ctx.task.sample_losses(ctx.model, batch)

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
                      generator=generator, scaling=hp.scaling, source=hp.gradient_source,
                      scope=hp.projection_scope)
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
                        p.grad = g.to(p.dtype)  # scaling factors may come back in float64
                    n_perturbed = sum(p.numel() for _, p in named)
                else:
                    loss, grads = activity_forward_gradient(
                        self.activity_loss(ctx, batch), taps, before_call=restore,
                        tangent=self.activity_tangent, **common)
                    for _, p in named:
                        g = grads.get(p)
                        p.grad = None if g is None else g.to(p.dtype)
                    n_perturbed = perturbed_size(taps.calls, self.activity_tangent)
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
