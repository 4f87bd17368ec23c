"""OIALR: orthogonality-informed adaptive low-rank training.

Train full-rank for a delay, then replace eligible weights (Linear, ungrouped Conv, attention
projections) by U Σ Vᵀ from their SVD, with U and V frozen and Σ (r × r) trainable. Layers are
converted from the output side first, a share of them at each check. At every check the trained Σ
is re-diagonalised (Σ = P diag(d) Qᵀ; U ← U P, V ← V Q, Σ ← diag(d)) and the rank is cut where the
singular values fall below ``sv_cutoff`` × the largest, removing at most ``max_cut`` of the rank
per check and never going below ``min_rank``.

The optimizer keeps its state through every change: a dense weight's first moment is projected
onto the new basis (Uᵀ M V), its second moment with the squared bases ((U∘U)ᵀ S (V∘V), which
keeps it non-negative), and the result is sliced to the kept rank. The row records the trainable
parameters over time (``x_trainable_history``, JSON [[step, trainable], ...]) and the final ranks.

With several ranks, parameters start from rank 0's and gradients are averaged by one all-reduce
per step (DDP cannot follow parameters that change shape); the SVDs are deterministic, so every
rank converts and cuts alike.
"""

from __future__ import annotations

import json
import math

import torch
import torch.distributed as dist
from torch import nn

from joulebench.harness.context import TrainContext
from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.registry import register_method
from joulebench.methods.lowrank import (
    USV,
    Slot,
    attach,
    count_trainable,
    replace_factor,
    svd,
    truncation_rank,
    weight_slots,
)
from joulebench.methods.optim import OPTIMIZER_PARAMS, make_optimizer, make_schedule

SECOND_MOMENTS = ("exp_avg_sq", "max_exp_avg_sq")


def move_state(opt: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter,
               first, second) -> None:
    """Put ``new`` in ``old``'s place in the optimizer; state tensors shaped like ``old`` are
    mapped by ``first`` (momenta) or ``second`` (squared-gradient averages), others kept."""
    state = opt.state.pop(old, None)
    if state:
        opt.state[new] = {
            key: (second(value) if key in SECOND_MOMENTS else first(value))
            if torch.is_tensor(value) and value.shape == old.shape else value
            for key, value in state.items()}
    for group in opt.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]


def convert(model: nn.Module, slot: Slot, opt: torch.optim.Optimizer | None, cutoff: float,
            floor: int, max_cut: float) -> int:
    """Factorise one dense slot as U Σ Vᵀ, cut to its rank; returns the rank."""
    weight = slot.dense()
    u, s, v = svd(weight)
    r = truncation_rank(s, cutoff, floor, None, max_cut)
    u, s, v = u[:, :r], s[:r], v[:, :r]
    factor = USV(u, torch.diag(s), v, weight.shape)
    attach(model, slot, factor)
    if opt is not None:
        shape = (weight.shape[0], -1)
        move_state(opt, weight, factor.sigma,
                   lambda m: (u.T @ m.reshape(shape) @ v),
                   lambda q: ((u * u).T @ q.reshape(shape) @ (v * v)).clamp_min(0))
    return r


def rediagonalise(slot: Slot, opt: torch.optim.Optimizer | None, cutoff: float, floor: int,
                  max_cut: float) -> int:
    """Σ = P diag(d) Qᵀ: fold P, Q into U, V, keep the leading singular values; returns the rank."""
    factor: USV = slot.factor()
    sigma = factor.sigma.detach()
    p, d, qh = torch.linalg.svd(sigma.double())
    p, d, q = p.to(sigma.dtype), d.to(sigma.dtype), qh.T.to(sigma.dtype)
    r = truncation_rank(d, cutoff, floor, factor.rank, max_cut)
    p, d, q = p[:, :r], d[:r], q[:, :r]
    new = USV(factor.u @ p, torch.diag(d), factor.v @ q, factor.shape)
    replace_factor(slot, new)
    if opt is not None:
        move_state(opt, factor.sigma, new.sigma, lambda m: p.T @ m @ q,
                   lambda s: ((p * p).T @ s @ (q * q)).clamp_min(0))
    return r


def all_reduce_mean(tensors: list[torch.Tensor]) -> int:
    """Average tensors over all ranks in one flat all-reduce; returns the payload bytes."""
    if not tensors:
        return 0
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return flat.numel() * flat.element_size()


@register_method
class OIALR(Method):
    name = "oialr"
    description = "Orthogonality-informed adaptive low-rank: train Σ of U Σ Vᵀ, cut ranks as Σ settles"
    params = {
        **OPTIMIZER_PARAMS,
        "delay_fraction": Param(0.25, low=0.0, high=0.95, help="share of the budget trained full-rank"),
        "every": Param(0, low=0, high=1_000_000, help="steps between checks; 0: a tenth of the rest"),
        "convert_checks": Param(3, low=1, high=100, help="checks over which layers are converted, "
                                "output side first"),
        "sv_cutoff": Param(0.1, low=0.0, high=1.0, help="cut singular values below this × the largest"),
        "max_cut": Param(0.5, low=0.0, high=1.0, help="largest share of a rank removed per check"),
        "min_rank": Param(4, low=1, high=100_000),
        "min_dim": Param(8, low=2, high=100_000, help="weights with a shorter side stay dense"),
        "exclude": Param("", help="comma-separated name parts of weights kept dense"),
        "clip_norm": Param(0.0, low=0.0, high=100.0, help="0: off"),
    }

    def train(self, ctx: TrainContext) -> None:
        hp, model = self.hp, ctx.model
        planned = ctx.planned_steps or 10 * ctx.steps_per_epoch
        delay = int(hp.delay_fraction * planned)
        every = hp.every or max((planned - delay) // 10, 1)
        pending = list(reversed(weight_slots(model, hp.exclude, hp.min_dim)))  # output side first
        per_check = math.ceil(len(pending) / hp.convert_checks) if pending else 0
        converted: list[Slot] = []
        dense_trainable = count_trainable(model)
        history = [[0, dense_trainable]]
        opt = make_optimizer(model.parameters(), hp, ctx.global_batch)
        schedule = make_schedule(opt, hp, ctx.planned_steps, ctx.steps_per_epoch)
        args = (hp.sv_cutoff, hp.min_rank, hp.max_cut)
        world, sent = ctx.dist.world_size, 0
        if world > 1:  # data-parallel: same start everywhere, gradients averaged by hand (DDP
            with torch.no_grad():  # cannot follow parameters that change shape)
                for t in list(model.parameters()) + list(model.buffers()):
                    dist.broadcast(t, 0)
        for batch in ctx.batches():
            opt.zero_grad(set_to_none=True)
            loss = ctx.loss(model, batch)
            loss.backward()
            if world > 1:
                sent += all_reduce_mean([p.grad for p in model.parameters() if p.grad is not None])
            if hp.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), hp.clip_norm)
            opt.step()
            if schedule:
                schedule.step()
            ctx.step(loss, batch)
            if ctx.steps >= delay and (ctx.steps - delay) % every == 0 and (pending or converted):
                for slot in converted:
                    rediagonalise(slot, opt, *args)
                for slot in pending[:per_check]:
                    convert(model, slot, opt, *args)
                    converted.append(slot)
                pending = pending[per_check:]
                history.append([ctx.steps, count_trainable(model)])
        ranks = {s.name: s.factor().rank for s in converted}
        full = {s.name: min(s.shape[0], int(torch.Size(s.shape[1:]).numel())) for s in converted}
        ctx.record(trainable_params=count_trainable(model), dense_trainable_params=dense_trainable,
                   trainable_fraction=count_trainable(model) / max(dense_trainable, 1),
                   converted_layers=len(converted), eligible_layers=len(converted) + len(pending),
                   rank_fraction=(sum(ranks.values()) / sum(full.values())) if full else None,
                   ranks=json.dumps(ranks), trainable_history=json.dumps(history))
        if world > 1:
            ctx.record(allreduce_bytes=sent * world)  # payload, summed over ranks
