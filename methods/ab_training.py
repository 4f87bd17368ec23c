"""AB-training: data-parallel low-rank training in independent groups.

Phases, on every rank (or on every replica of a one-process simulation):

1. **warm-up**: full-rank data-parallel steps (gradients all-reduced over all ranks) with a linear
   learning-rate warm-up (``warmup_steps``) during the first ``warmup_fraction`` of the budget;
2. **decompose**: every eligible weight W = U S Vᵀ becomes A = U √S (out × r), B = √S Vᵀ (r × in),
   cut where the singular values fall below ``sv_cutoff`` × the largest and capped where the
   factors would outgrow W (the rank is agreed over ranks by an all-reduce MAX);
3. **AB phase** (``ab_steps``): the ranks form independent groups of ``group_size`` ranks
   (consecutive ranks; world / group_size groups); even-numbered groups train only A, odd ones
   only B; gradients are all-reduced inside the group only (a group of one rank moves nothing);
4. **sync**: ``learned`` (the authors') takes each factor from the ranks that trained it: A is
   averaged over the A-training ranks by an all-reduce among them and broadcast to every rank
   from the first of them, B likewise; ``learned_world`` (the earlier implementation, an option)
   gets the same values by all-reducing zero-masked A and B over all ranks; ``both`` averages
   A and B over all ranks; ``product`` averages the products A·B (dense). Weights that are not
   factorised (biases, norms, embeddings) are averaged over all ranks;
5. **full-rank** DDP steps (``full_steps``) on W = A·B, then back to 2.

The authors' setup (Helmholtz-AI-Energy/AB-Training, ``configs/training/ab_trainer_conf.yaml``,
``src/madonna/trainers/ab_trainer.py``; paper "AB-Training: A Communication-Efficient Approach
for Distributed Low-Rank Learning"): AdamW (weight decay 0.01), lr 1e-4 with a cosine schedule
and warm-up, ``ab.warmup_steps`` 10, ``steps_btw_syncing`` 10, ``ddp_steps_after_sync`` 10, low-rank
cut 0.1, the learning rate rebounding over 50 steps after a sync, independent training of every
rank by default (``train_comm_setup: individual``, i.e. groups of one: ``group_size=1``) or in
groups; VGG16/CIFAR-10 (44:1 compression, −50 % traffic) and ResNet/ViT on ImageNet at 2–64 nodes.

After each switch the optimizer starts afresh and the learning rate rebounds linearly from
``rebound_start`` × its value over ``rebound_steps`` steps; ``schedule`` (cosine or halving each
epoch of local steps) multiplies it. Training ends with a sync, so the stored model is one dense
model, identical on every rank.

Every collective is counted: its payload (tensor elements × element size, per participating rank,
summed over ranks) and the traffic that payload implies (ring all-reduce 2(g−1)/g × payload for
a group of g ranks; a broadcast (g−1)/g × payload). The same counts for plain DDP over the same
steps (one all-reduce of every trainable gradient per step) go beside them in the row.

``simulate_ranks=N`` keeps N replicas in one process, each fed its own batch per step, and averages
them exactly as the collectives would: for quick tests and a machine without a launcher. With a
launcher (``world_size`` > 1) the method uses torch.distributed process groups.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from joulebench.harness.context import TrainContext
from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.registry import register_method
from joulebench.methods.lowrank import (
    AB,
    Slot,
    attach,
    count_trainable,
    detach,
    svd,
    truncation_rank,
    weight_slots,
)
from joulebench.methods.optim import OPTIMIZER_PARAMS, make_optimizer, scaled_lr

TEAM_A, TEAM_B = 0, 1
SCOPES = ("world", "group", "team")


def group_of(rank: int, group_size: int) -> int:
    return rank // group_size


def team_of(rank: int, group_size: int) -> int:
    """Even-numbered groups train A, odd ones B."""
    return TEAM_A if group_of(rank, group_size) % 2 == 0 else TEAM_B


def groups_problem(world: int, group_size: int) -> str | None:
    if group_size < 1 or world % group_size:
        return f"group_size {group_size} does not divide the {world} ranks"
    if world // group_size < 2:
        return (f"group_size {group_size} leaves one group of {world} ranks: AB-training needs "
                "at least one group for A and one for B")
    return None


def rank_cap(rows: int, cols: int) -> int:
    """The largest rank whose factors (rows + cols) · r are no larger than the dense weight."""
    return max(rows * cols // (rows + cols), 1)


def nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Traffic:
    """Collective payload and implied traffic bytes, summed over ranks, by kind of call."""

    payload: dict[str, int] = field(default_factory=dict)
    ring: dict[str, float] = field(default_factory=dict)
    calls: int = 0

    def add(self, kind: str, payload: int, group_size: int, broadcast: bool = False) -> None:
        if group_size <= 1:
            return  # a one-rank collective moves nothing
        self.calls += 1
        factor = (group_size - 1) / group_size * (1 if broadcast else 2)
        self.payload[kind] = self.payload.get(kind, 0) + payload
        self.ring[kind] = self.ring.get(kind, 0.0) + payload * factor


class Comm:
    """Sum-all-reduce over all ranks, the caller's group or its team; broadcast from one rank.

    ``values[j]`` are the tensors of local replica j; results are written back in place.
    """

    def __init__(self, world: int, ranks: list[int], group_size: int) -> None:
        self.world, self.ranks, self.group_size = world, ranks, group_size
        self.traffic = Traffic()

    def members(self, rank: int, scope: str) -> list[int]:
        if scope == "world":
            return list(range(self.world))
        key = group_of if scope == "group" else team_of
        return [r for r in range(self.world) if key(r, self.group_size) == key(rank, self.group_size)]

    def first_of_team(self, team: int) -> int:
        return next(r for r in range(self.world) if team_of(r, self.group_size) == team)

    def sum(self, values: list[list[torch.Tensor]], scope: str, kind: str) -> None:
        raise NotImplementedError

    def broadcast(self, values: list[list[torch.Tensor]], src: int, kind: str) -> None:
        raise NotImplementedError

    def team_sum(self, values: list[list[torch.Tensor]], team: int, kind: str) -> None:
        """Sum over the ranks of ``team`` only; other ranks take no part."""
        raise NotImplementedError

    def max_int(self, values: list[list[int]], kind: str) -> list[int]:
        tensors = [[torch.tensor(v, dtype=torch.int64)] for v in values]
        self._max(tensors, kind)
        return tensors[0][0].tolist()

    def _max(self, values: list[list[torch.Tensor]], kind: str) -> None:
        raise NotImplementedError


class SimulatedComm(Comm):
    """All ranks are replicas in this process."""

    def __init__(self, world: int, group_size: int) -> None:
        super().__init__(world, list(range(world)), group_size)

    def _reduce(self, values, scope, kind, op: Callable) -> None:
        done: set[int] = set()
        for rank in self.ranks:
            group = self.members(rank, scope)
            if rank in done:
                continue
            done.update(group)
            for i in range(len(values[rank])):
                total = op([values[r][i] for r in group])
                for r in group:
                    values[r][i].copy_(total)
            for r in group:
                self.traffic.add(kind, nbytes(values[r]), len(group))

    def sum(self, values, scope, kind) -> None:
        self._reduce(values, scope, kind, lambda ts: torch.stack(ts).sum(0))

    def team_sum(self, values, team, kind) -> None:
        members = [r for r in self.ranks if team_of(r, self.group_size) == team]
        for i in range(len(values[members[0]]) if members else 0):
            total = torch.stack([values[r][i] for r in members]).sum(0)
            for r in members:
                values[r][i].copy_(total)
        for r in members:
            self.traffic.add(kind, nbytes(values[r]), len(members))

    def broadcast(self, values, src, kind) -> None:
        for r in self.ranks:
            if r != src:
                for t, s in zip(values[r], values[src], strict=True):
                    t.copy_(s)
            self.traffic.add(kind, nbytes(values[r]), self.world, broadcast=True)

    def _max(self, values, kind) -> None:
        self._reduce(values, "world", kind, lambda ts: torch.stack(ts).amax(0))


class TorchComm(Comm):
    """One replica per process; torch.distributed with a process group per group and per team."""

    def __init__(self, rank: int, world: int, group_size: int) -> None:
        super().__init__(world, [rank], group_size)
        self.rank = rank
        handles = {}
        for scope in ("group", "team"):  # every rank must create every group, in one order
            key = group_of if scope == "group" else team_of
            for value in sorted({key(r, group_size) for r in range(world)}):
                members = [r for r in range(world) if key(r, group_size) == value]
                handle = dist.new_group(members)
                if key(rank, group_size) == value:
                    handles[scope] = handle
        self.handles = {"world": None, **handles}

    def _flat_call(self, tensors: list[torch.Tensor], call) -> None:
        flat = torch.cat([t.reshape(-1) for t in tensors])
        call(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def _call(self, tensors: list[torch.Tensor], scope: str, kind: str, op) -> None:
        size = len(self.members(self.rank, scope))
        if not tensors or size <= 1:
            return
        self._flat_call(tensors, lambda flat: dist.all_reduce(flat, op=op, group=self.handles[scope]))
        self.traffic.add(kind, nbytes(tensors), size)

    def sum(self, values, scope, kind) -> None:
        self._call(values[0], scope, kind, dist.ReduceOp.SUM)

    def team_sum(self, values, team, kind) -> None:
        if team_of(self.rank, self.group_size) == team:
            self._call(values[0], "team", kind, dist.ReduceOp.SUM)

    def broadcast(self, values, src, kind) -> None:
        if values[0]:
            self._flat_call(values[0], lambda flat: dist.broadcast(flat, src))
            self.traffic.add(kind, nbytes(values[0]), self.world, broadcast=True)

    def _max(self, values, kind) -> None:
        self._call(values[0], "world", kind, dist.ReduceOp.MAX)

    def total(self) -> Traffic:
        """This rank's counts summed over all ranks (a bookkeeping reduction, not counted)."""
        kinds = sorted(set(self.traffic.payload) | {"full", "group", "sync", "rank"})
        data = torch.tensor([float(self.traffic.payload.get(k, 0)) for k in kinds]
                            + [self.traffic.ring.get(k, 0.0) for k in kinds]
                            + [float(self.traffic.calls)], dtype=torch.float64)
        dist.all_reduce(data)
        n = len(kinds)
        out = Traffic(calls=int(data[-1]))
        for i, k in enumerate(kinds):
            if data[i] > 0:
                out.payload[k], out.ring[k] = int(data[i]), float(data[n + i])
        return out
@dataclass
class Replica:
    rank: int
    model: nn.Module
    slots: list[Slot]
    opt: torch.optim.Optimizer | None = None

    def factors(self) -> list[AB]:
        return [s.factor() for s in self.slots]

    def others(self) -> list[torch.Tensor]:
        """Parameters that are not factorised and running statistics of normalisation layers
        (averaged at every sync); constant buffers (positional tables) are left alone."""
        skip = {id(t) for f in self.factors() if f is not None for t in (f.a, f.b)}
        params = [p for p in self.model.parameters() if id(p) not in skip]
        stats = [b for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
                 for b in (m.running_mean, m.running_var) if b is not None]
        return params + stats


@dataclass
class ABRun:
    """Everything one AB-training run keeps between steps (one object, passed to small steps)."""

    hp: Any
    world: int
    comm: Comm
    replicas: list[Replica]
    base_lr: float
    planned: int
    local_steps_per_epoch: int
    stats: dict = field(default_factory=lambda: {"phases": 0, "ranks": {}, "trainable_per_rank": [],
                                                 "factor_params": 0, "factored_dense_params": 0})
    phase: str = "full"
    phase_start: int = 0

    def new_optimizers(self) -> None:
        for replica in self.replicas:
            replica.opt = make_optimizer(replica.model.parameters(), self.hp)


def make_run(ctx: TrainContext, hp) -> ABRun:
    """Replicas and communicator: simulated ranks in this process, or one per launched rank."""
    if hp.simulate_ranks and ctx.dist.world_size > 1:
        raise ValueError("simulate_ranks is for one-process runs; this run already has "
                         f"{ctx.dist.world_size} ranks")
    if hp.simulate_ranks >= 2:
        world = hp.simulate_ranks
        models = [ctx.model] + [copy.deepcopy(ctx.model) for _ in range(world - 1)]
        ranks = list(range(world))
    elif ctx.dist.world_size >= 2:
        world, models, ranks = ctx.dist.world_size, [ctx.model], [ctx.dist.rank]
        with torch.no_grad():  # identical start on every rank
            for t in list(ctx.model.parameters()) + list(ctx.model.buffers()):
                dist.broadcast(t, 0)
    else:
        raise ValueError("AB-training needs at least two ranks: launch with world_size >= 2 "
                         "or set simulate_ranks >= 2")
    size = hp.group_size or world // 2
    problem = groups_problem(world, size)
    if problem:
        raise ValueError(problem)
    comm = SimulatedComm(world, size) if hp.simulate_ranks >= 2 else TorchComm(ctx.dist.rank, world, size)
    replicas = [Replica(r, m, weight_slots(m, hp.exclude, hp.min_dim)) for r, m in zip(ranks, models, strict=True)]
    if not replicas[0].slots:
        raise RuntimeError(f"{ctx.task.model_name()} has no weight to factorise (min_dim {hp.min_dim})")
    local = len(replicas)
    return ABRun(hp, world, comm, replicas, scaled_lr(hp, ctx.task.batch_size * world),
                 planned_steps(ctx, local), max(ctx.steps_per_epoch // local, 1))


def lr_factor(run: ABRun, step: int, since_switch: int | None) -> float:
    """Warm-up, the schedule (cosine, or halving every epoch of local steps), the rebound."""
    hp = run.hp
    factor = (step + 1) / hp.warmup_steps if step < hp.warmup_steps else 1.0
    if hp.schedule == "cosine":
        factor *= 0.5 * (1 + math.cos(math.pi * min(step / run.planned, 1.0)))
    elif hp.schedule == "halve_per_epoch":
        factor *= 0.5 ** (step // run.local_steps_per_epoch)
    if since_switch is not None and since_switch < hp.rebound_steps:
        factor *= hp.rebound_start + (1 - hp.rebound_start) * since_switch / hp.rebound_steps
    return factor


def reduce_gradients(run: ABRun, scope: str) -> None:
    grads = []
    for replica in run.replicas:
        params = [p for p in replica.model.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads.append([p.grad for p in params])
    run.comm.sum(grads, scope, "full" if scope == "world" else "group")
    for replica, gs in zip(run.replicas, grads, strict=True):
        size = len(run.comm.members(replica.rank, scope))
        for g in gs:
            g.div_(size)


def agreed_ranks(run: ABRun, decomposed) -> list[int]:
    hp = run.hp
    wanted = [[min(truncation_rank(s, hp.sv_cutoff, hp.min_rank), rank_cap(u.shape[0], v.shape[0]))
               for u, s, v in usv] for usv in decomposed]
    return run.comm.max_int(wanted, "rank")


def decompose(run: ABRun) -> None:
    """Every slot W = U S Vᵀ → A = U√S, B = √S Vᵀ at the agreed rank; each team freezes one."""
    decomposed = [[svd(slot.dense()) for slot in replica.slots] for replica in run.replicas]
    agreed = agreed_ranks(run, decomposed)
    factor_params = dense_params = 0
    trainable = []
    for replica, usv in zip(run.replicas, decomposed, strict=True):
        team = team_of(replica.rank, run.comm.group_size)
        for slot, r, (u, s, v) in zip(replica.slots, agreed, usv, strict=True):
            weight = slot.dense()
            root = s[:r].sqrt()
            factor = AB(u[:, :r] * root, root[:, None] * v[:, :r].T, weight.shape)
            attach(replica.model, slot, factor)
            (factor.b if team == TEAM_A else factor.a).requires_grad_(False)
            if replica is run.replicas[0]:
                factor_params += factor.a.numel() + factor.b.numel()
                dense_params += weight.numel()
        trainable.append(count_trainable(replica.model))
    run.stats["phases"] += 1
    run.stats["ranks"] = {s.name: r for s, r in zip(run.replicas[0].slots, agreed, strict=True)}
    run.stats["factor_params"], run.stats["factored_dense_params"] = factor_params, dense_params
    if isinstance(run.comm, TorchComm):  # trainable counts of both teams, for the row
        counts = torch.zeros(run.world, dtype=torch.float64)
        counts[run.replicas[0].rank] = trainable[0]
        dist.all_reduce(counts)
        trainable = counts.tolist()
    run.stats["trainable_per_rank"] = trainable


def sync_learned(run: ABRun) -> None:
    """The authors' sync: each factor averaged among the ranks that trained it, then broadcast."""
    comm = run.comm
    for team, pick in ((TEAM_A, lambda f: f.a), (TEAM_B, lambda f: f.b)):
        values = [[pick(f).data for f in r.factors()] for r in run.replicas]
        comm.team_sum(values, team, "sync")
        size = len(comm.members(comm.first_of_team(team), "team"))
        for replica, v in zip(run.replicas, values, strict=True):
            if team_of(replica.rank, comm.group_size) == team:
                for t in v:
                    t.div_(size)
        comm.broadcast(values, comm.first_of_team(team), "sync")


def sync_factors_world(run: ABRun, mode: str) -> None:
    """``both``: A and B averaged over all ranks; ``learned_world``: zero-masked, the same values
    as ``learned`` with every factor all-reduced over all ranks."""
    comm = run.comm
    values = []
    for replica in run.replicas:
        team = team_of(replica.rank, comm.group_size)
        tensors = []
        for f in replica.factors():
            if mode == "learned_world":  # each factor from the team that trained it
                f.a.mul_(1.0 if team == TEAM_A else 0.0)
                f.b.mul_(1.0 if team == TEAM_B else 0.0)
            tensors += [f.a.data, f.b.data]
        values.append(tensors)
    comm.sum(values, "world", "sync")
    n_a = sum(1 for r in range(run.world) if team_of(r, comm.group_size) == TEAM_A)
    div_a, div_b = (n_a, run.world - n_a) if mode == "learned_world" else (run.world, run.world)
    for replica in run.replicas:
        for f in replica.factors():
            f.a.div_(div_a)
            f.b.div_(div_b)


def sync(run: ABRun) -> None:
    """One dense model on every rank again, combined as ``sync_mode`` says."""
    mode = run.hp.sync_mode
    others = [r.others() for r in run.replicas]  # before the factors become dense again
    for replica in run.replicas:
        for f in replica.factors():
            f.a.requires_grad_(False)
            f.b.requires_grad_(False)
    with torch.no_grad():
        if mode == "product":
            dense = [[s.factor().compose() for s in r.slots] for r in run.replicas]
            run.comm.sum(dense, "world", "sync")
            for replica, ws in zip(run.replicas, dense, strict=True):
                for slot, w in zip(replica.slots, ws, strict=True):
                    detach(replica.model, slot, w / run.world)
        else:
            sync_learned(run) if mode == "learned" else sync_factors_world(run, mode)
            for replica in run.replicas:
                for slot in replica.slots:
                    detach(replica.model, slot)
        run.comm.sum(others, "world", "sync")
        for ts in others:
            for t in ts:
                t.div_(run.world)


def switch_phase(run: ABRun, t: int, warmup_end: int) -> bool:
    """Sync after an AB phase, decompose after the warm-up or a full-rank phase; switches happen
    before the step they govern. True when the phase changed."""
    hp, changed = run.hp, False
    if run.phase == "ab" and t - run.phase_start >= hp.ab_steps:
        sync(run)
        run.phase, run.phase_start, changed = "full", t, True
    if run.phase == "full" and t >= warmup_end and (
            run.stats["phases"] == 0 or t - run.phase_start >= hp.full_steps):
        decompose(run)
        run.phase, run.phase_start, changed = "ab", t, True
    if changed:
        run.new_optimizers()
    return changed


def train_step(run: ABRun, ctx: TrainContext, group: list[dict], step: int) -> None:
    factor = lr_factor(run, step, step - run.phase_start if run.stats["phases"] else None)
    losses = []
    for replica, batch in zip(run.replicas, group, strict=True):
        for g in replica.opt.param_groups:
            g["lr"] = run.base_lr * factor
        replica.opt.zero_grad(set_to_none=True)
        loss = ctx.loss(replica.model, batch)
        loss.backward()
        losses.append(loss.detach())
    reduce_gradients(run, "world" if run.phase == "full" else "group")
    for replica in run.replicas:
        replica.opt.step()
    ctx.step(torch.stack(losses).mean())


def record(ctx: TrainContext, run: ABRun, dense_trainable: int, dense_bytes: int, history) -> None:
    traffic = run.comm.total() if isinstance(run.comm, TorchComm) else run.comm.traffic
    world, steps = run.world, ctx.steps
    ddp_payload = steps * world * dense_bytes
    ddp_ring = ddp_payload * 2 * (world - 1) / world
    ab_payload, ab_ring = sum(traffic.payload.values()), sum(traffic.ring.values())
    per_rank, stats = run.stats["trainable_per_rank"], run.stats
    ctx.record(
        ranks_total=world, simulated=bool(run.hp.simulate_ranks), ab_phases=stats["phases"],
        group_size=run.comm.group_size, groups=world // run.comm.group_size,
        dense_trainable_params=dense_trainable,
        trainable_params=(sum(per_rank) / len(per_rank)) if per_rank else dense_trainable,
        factor_params=stats["factor_params"], factored_dense_params=stats["factored_dense_params"],
        compression=(stats["factored_dense_params"] / stats["factor_params"]
                     if stats["factor_params"] else None),
        ranks=json.dumps(stats["ranks"]),
        ab_allreduce_bytes=ab_payload, ddp_allreduce_bytes=ddp_payload,
        ab_bytes_ratio=ab_payload / ddp_payload if ddp_payload else None,
        ab_ring_bytes=ab_ring, ddp_ring_bytes=ddp_ring,
        ab_ring_ratio=ab_ring / ddp_ring if ddp_ring else None,
        trainable_history=json.dumps(history), allreduce_calls=traffic.calls,
        ab_bytes_by_kind=json.dumps(traffic.payload, sort_keys=True))


@register_method
class ABTraining(Method):
    name = "ab_training"
    description = "AB-training: low-rank A·B factors trained by independent rank groups, periodic sync"
    params = {
        **OPTIMIZER_PARAMS,
        "warmup_steps": Param(10, low=0, high=100_000, help="linear learning-rate warm-up at the start"),
        "simulate_ranks": Param(0, low=0, high=64, help="N >= 2: simulate N ranks in one process"),
        "group_size": Param(1, low=0, high=4096,
                            help="ranks per independent group (the authors' default: 1, every rank "
                                 "alone); 0: two halves (the earlier behaviour)"),
        "warmup_fraction": Param(0.1, low=0.0, high=0.9, help="share of the budget trained full-rank first"),
        "ab_steps": Param(20, low=1, high=1_000_000, help="steps of each AB phase"),
        "full_steps": Param(5, low=0, high=1_000_000, help="full-rank DDP steps after each sync"),
        "sync_mode": Param("learned", choices=("learned", "learned_world", "both", "product")),
        "sv_cutoff": Param(0.1, low=0.0, high=1.0, help="cut singular values below this × the largest"),
        "min_rank": Param(4, low=1, high=100_000),
        "min_dim": Param(8, low=2, high=100_000, help="weights with a shorter side stay dense"),
        "exclude": Param("", help="comma-separated name parts of weights kept dense"),
        "rebound_steps": Param(5, low=0, high=100_000, help="learning-rate rebound after each switch"),
        "rebound_start": Param(0.1, low=0.0, high=1.0),
    }

    def train(self, ctx: TrainContext) -> None:
        run = make_run(ctx, self.hp)
        warmup_end = int(self.hp.warmup_fraction * run.planned)
        dense_trainable = count_trainable(ctx.model)
        dense_bytes = nbytes([p for p in ctx.model.parameters() if p.requires_grad])
        history = [[0, dense_trainable]]
        run.new_optimizers()
        for group in ctx.batches(group=len(run.replicas)):
            t = ctx.steps - 1  # steps before this one (the runner counted it when handing it out)
            if switch_phase(run, t, warmup_end):
                per_rank = run.stats["trainable_per_rank"] if run.phase == "ab" else [dense_trainable]
                history.append([t, sum(per_rank) / len(per_rank)])
            train_step(run, ctx, group, t)
        if run.phase == "ab":
            sync(run)
        record(ctx, run, dense_trainable, dense_bytes, history)


def planned_steps(ctx: TrainContext, local: int) -> int:
    """Steps the budget allows when each step consumes ``local`` batches (simulated ranks)."""
    budget = ctx.spec.budget
    options = [budget.steps] if budget.steps else []
    if budget.epochs:
        options.append(math.ceil(budget.epochs * ctx.steps_per_epoch / local))
    return max(min(options) if options else 10 * ctx.steps_per_epoch // local, 1)


def _len(batch: dict) -> int:
    for value in batch.values():
        if torch.is_tensor(value) and value.dim() > 0:
            return int(value.shape[0])
    return 0
