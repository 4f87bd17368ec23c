"""AB-training: data-parallel low-rank training in independent groups.

Phases, on every rank (or on every replica of a one-process simulation):

1. **warm-up**: full-rank data-parallel steps (gradients all-reduced over all ranks) with a linear
   learning-rate warm-up (``warmup_steps``) during the first ``warmup_fraction`` of the budget;
2. **decompose**: every eligible weight W = U S Vᵀ becomes A = U √S (out × r), B = √S Vᵀ (r × in),
   cut where the singular values fall below ``sv_cutoff`` × the largest and capped where the
   factors would outgrow W (the rank is agreed over ranks by an all-reduce MAX);
3. **AB phase** (``ab_steps``): the first half of the ranks trains only A, the second half only B;
   gradients are all-reduced inside the group only (a group of one rank moves nothing);
4. **sync**: ``both`` averages A and B over all ranks; ``learned`` takes each factor from the group
   that trained it (averaged inside that group); ``product`` averages the products A·B (dense).
   Weights that are not factorised (biases, norms, embeddings) are averaged over all ranks;
5. **full-rank** DDP steps (``full_steps``) on W = A·B, then back to 2.

After each switch the optimizer starts afresh and the learning rate rebounds linearly from
``rebound_start`` × its value over ``rebound_steps`` steps. Training ends with a sync, so the
stored model is one dense model, identical on every rank.

Every all-reduce is counted: its payload (tensor elements × element size, per participating rank,
summed over ranks) and the ring-algorithm traffic that payload implies (2(g−1)/g × payload for a
group of g ranks). The same counts for plain DDP over the same steps (one all-reduce of every
trainable gradient per step) go beside them in the row.

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

GROUP_A, GROUP_B = 0, 1


def group_of(rank: int, world: int) -> int:
    """The first half of the ranks trains A, the second half B."""
    return GROUP_A if rank < world // 2 else GROUP_B


def rank_cap(rows: int, cols: int) -> int:
    """The largest rank whose factors (rows + cols) · r are no larger than the dense weight."""
    return max(rows * cols // (rows + cols), 1)


def nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Traffic:
    """All-reduce payload and ring-traffic bytes, summed over ranks, by kind of call."""

    payload: dict[str, int] = field(default_factory=dict)
    ring: dict[str, float] = field(default_factory=dict)
    calls: int = 0

    def add(self, kind: str, payload: int, group_size: int) -> None:
        if group_size <= 1:
            return  # a one-rank all-reduce moves nothing
        self.calls += 1
        self.payload[kind] = self.payload.get(kind, 0) + payload
        self.ring[kind] = self.ring.get(kind, 0.0) + payload * 2 * (group_size - 1) / group_size


class Comm:
    """Sum-all-reduce over all ranks (``world``) or over the caller's group (``own``).

    ``values[j]`` are the tensors of local replica j; sums are written back in place.
    """

    def __init__(self, world: int, ranks: list[int]) -> None:
        self.world, self.ranks = world, ranks
        self.traffic = Traffic()

    def members(self, rank: int, scope: str) -> list[int]:
        if scope == "world":
            return list(range(self.world))
        return [r for r in range(self.world) if group_of(r, self.world) == group_of(rank, self.world)]

    def sum(self, values: list[list[torch.Tensor]], scope: str, kind: str) -> None:
        raise NotImplementedError

    def max_int(self, values: list[list[int]], kind: str) -> list[int]:
        tensors = [[torch.tensor(v, dtype=torch.int64)] for v in values]
        self._max(tensors, kind)
        return tensors[0][0].tolist()

    def _max(self, values: list[list[torch.Tensor]], kind: str) -> None:
        raise NotImplementedError


class SimulatedComm(Comm):
    """All ranks are replicas in this process."""

    def __init__(self, world: int) -> None:
        super().__init__(world, list(range(world)))

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

    def _max(self, values, kind) -> None:
        self._reduce(values, "world", kind, lambda ts: torch.stack(ts).amax(0))


class TorchComm(Comm):
    """One replica per process; torch.distributed with one process group per half."""

    def __init__(self, rank: int, world: int) -> None:
        super().__init__(world, [rank])
        self.rank = rank
        groups = [dist.new_group([r for r in range(world) if group_of(r, world) == g])
                  for g in (GROUP_A, GROUP_B)]  # every rank must create both
        self.own = groups[group_of(rank, world)]

    def _call(self, tensors: list[torch.Tensor], scope: str, kind: str, op) -> None:
        group = None if scope == "world" else self.own
        size = len(self.members(self.rank, scope))
        if not tensors or size <= 1:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=op, group=group)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
        self.traffic.add(kind, nbytes(tensors), size)

    def sum(self, values, scope, kind) -> None:
        self._call(values[0], scope, kind, dist.ReduceOp.SUM)

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


@register_method
class ABTraining(Method):
    name = "ab_training"
    description = "AB-training: low-rank A·B factors trained by independent rank groups, periodic sync"
    params = {
        **OPTIMIZER_PARAMS,
        "warmup_steps": Param(10, low=0, high=100_000, help="linear learning-rate warm-up at the start"),
        "simulate_ranks": Param(0, low=0, high=64, help="N >= 2: simulate N ranks in one process"),
        "warmup_fraction": Param(0.1, low=0.0, high=0.9, help="share of the budget trained full-rank first"),
        "ab_steps": Param(20, low=1, high=1_000_000, help="steps of each AB phase"),
        "full_steps": Param(5, low=0, high=1_000_000, help="full-rank DDP steps after each sync"),
        "sync_mode": Param("learned", choices=("both", "learned", "product")),
        "sv_cutoff": Param(0.1, low=0.0, high=1.0, help="cut singular values below this × the largest"),
        "min_rank": Param(4, low=1, high=100_000),
        "min_dim": Param(8, low=2, high=100_000, help="weights with a shorter side stay dense"),
        "exclude": Param("", help="comma-separated name parts of weights kept dense"),
        "rebound_steps": Param(5, low=0, high=100_000, help="learning-rate rebound after each switch"),
        "rebound_start": Param(0.1, low=0.0, high=1.0),
    }

    def train(self, ctx: TrainContext) -> None:
        hp = self.hp
        if hp.simulate_ranks and ctx.dist.world_size > 1:
            raise ValueError("simulate_ranks is for one-process runs; this run already has "
                             f"{ctx.dist.world_size} ranks")
        if hp.simulate_ranks >= 2:
            world = hp.simulate_ranks
            comm: Comm = SimulatedComm(world)
            models = [ctx.model] + [copy.deepcopy(ctx.model) for _ in range(world - 1)]
            ranks = list(range(world))
        elif ctx.dist.world_size >= 2:
            world = ctx.dist.world_size
            comm = TorchComm(ctx.dist.rank, world)
            models, ranks = [ctx.model], [ctx.dist.rank]
            with torch.no_grad():  # identical start on every rank
                for t in list(ctx.model.parameters()) + list(ctx.model.buffers()):
                    dist.broadcast(t, 0)
        else:
            raise ValueError("AB-training needs at least two ranks: launch with world_size >= 2 "
                             "or set simulate_ranks >= 2")
        self.world, self.comm = world, comm
        self._base_lr = scaled_lr(hp, ctx.task.batch_size * world)
        self.replicas = [Replica(r, m, weight_slots(m, hp.exclude, hp.min_dim)) for r, m in zip(ranks, models)]
        if not self.replicas[0].slots:
            raise RuntimeError(f"{ctx.task.model_name()} has no weight to factorise (min_dim {hp.min_dim})")
        local = len(self.replicas)
        planned = planned_steps(ctx, local)
        warmup_end = int(hp.warmup_fraction * planned)
        self._planned = planned
        dense_trainable = count_trainable(ctx.model)
        dense_bytes = nbytes([p for p in ctx.model.parameters() if p.requires_grad])
        self.stats: dict = {"phases": 0, "ranks": {}, "trainable_per_rank": [], "factor_params": 0,
                            "factored_dense_params": 0}
        phase, phase_start = "full", 0
        history = [[0, dense_trainable]]
        self._new_optimizers(phase)
        for group in ctx.batches(group=local):
            t = ctx.steps - 1  # steps before this one (the runner counted it when handing it out)
            # switches happen before the step they govern
            changed = False
            if phase == "ab" and t - phase_start >= hp.ab_steps:
                self._sync()
                phase, phase_start, changed = "full", t, True
            if phase == "full" and t >= warmup_end and (
                    self.stats["phases"] == 0 or t - phase_start >= hp.full_steps):
                self._decompose()
                phase, phase_start, changed = "ab", t, True
            if changed:
                self._new_optimizers(phase)
                per_rank = self.stats["trainable_per_rank"] if phase == "ab" else [dense_trainable]
                history.append([t, sum(per_rank) / len(per_rank)])
            factor = self._lr_factor(t, t - phase_start if self.stats["phases"] else None)
            losses = []
            for replica, batch in zip(self.replicas, group):
                for g in replica.opt.param_groups:
                    g["lr"] = self._base_lr * factor
                replica.opt.zero_grad(set_to_none=True)
                loss = ctx.loss(replica.model, batch)
                loss.backward()
                losses.append(loss.detach())
            self._reduce_gradients("world" if phase == "full" else "own")
            for replica in self.replicas:
                replica.opt.step()
            ctx.step(torch.stack(losses).mean())
        if phase == "ab":
            self._sync()
        traffic = comm.total() if isinstance(comm, TorchComm) else comm.traffic
        steps = ctx.steps
        ddp_payload = steps * world * dense_bytes
        ddp_ring = ddp_payload * 2 * (world - 1) / world
        ab_payload, ab_ring = sum(traffic.payload.values()), sum(traffic.ring.values())
        per_rank = self.stats["trainable_per_rank"]
        ctx.record(
            ranks_total=world, simulated=bool(hp.simulate_ranks), ab_phases=self.stats["phases"],
            dense_trainable_params=dense_trainable,
            trainable_params=(sum(per_rank) / len(per_rank)) if per_rank else dense_trainable,
            factor_params=self.stats["factor_params"],
            factored_dense_params=self.stats["factored_dense_params"],
            compression=(self.stats["factored_dense_params"] / self.stats["factor_params"]
                         if self.stats["factor_params"] else None),
            ranks=json.dumps(self.stats["ranks"]),
            ab_allreduce_bytes=ab_payload, ddp_allreduce_bytes=ddp_payload,
            ab_bytes_ratio=ab_payload / ddp_payload if ddp_payload else None,
            ab_ring_bytes=ab_ring, ddp_ring_bytes=ddp_ring,
            ab_ring_ratio=ab_ring / ddp_ring if ddp_ring else None,
            trainable_history=json.dumps(history), allreduce_calls=traffic.calls, ab_bytes_by_kind=json.dumps(traffic.payload, sort_keys=True))

    # -- phases -------------------------------------------------------------------------------
    def _lr_factor(self, step: int, since_switch: int | None) -> float:
        hp = self.hp
        factor = (step + 1) / hp.warmup_steps if step < hp.warmup_steps else 1.0
        if hp.schedule == "cosine" and self._planned:
            factor *= 0.5 * (1 + math.cos(math.pi * min(step / self._planned, 1.0)))
        if since_switch is not None and since_switch < hp.rebound_steps:
            factor *= hp.rebound_start + (1 - hp.rebound_start) * since_switch / hp.rebound_steps
        return factor

    _planned: int | None = None

    def _new_optimizers(self, phase: str) -> None:
        for replica in self.replicas:
            replica.opt = make_optimizer(replica.model.parameters(), self.hp)

    def _reduce_gradients(self, scope: str) -> None:
        grads = []
        for replica in self.replicas:
            params = [p for p in replica.model.parameters() if p.requires_grad]
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            grads.append([p.grad for p in params])
        kind = "full" if scope == "world" else "group"
        self.comm.sum(grads, scope, kind)
        for replica, gs in zip(self.replicas, grads):
            size = len(self.comm.members(replica.rank, scope))
            for g in gs:
                g.div_(size)

    def _decompose(self) -> None:
        hp = self.hp
        wanted, decomposed = [], []
        for replica in self.replicas:
            usv = [svd(slot.dense()) for slot in replica.slots]
            decomposed.append(usv)
            wanted.append([min(truncation_rank(s, hp.sv_cutoff, hp.min_rank), rank_cap(u.shape[0], v.shape[0]))
                           for u, s, v in usv])
        agreed = self.comm.max_int(wanted, "rank")
        factor_params = dense_params = 0
        trainable = []
        for replica, usv in zip(self.replicas, decomposed):
            team = group_of(replica.rank, self.world)
            for slot, r, (u, s, v) in zip(replica.slots, agreed, usv):
                weight = slot.dense()
                root = s[:r].sqrt()
                factor = AB(u[:, :r] * root, root[:, None] * v[:, :r].T, weight.shape)
                attach(replica.model, slot, factor)
                (factor.b if team == GROUP_A else factor.a).requires_grad_(False)
                if replica is self.replicas[0]:
                    factor_params += factor.a.numel() + factor.b.numel()
                    dense_params += weight.numel()
            trainable.append(count_trainable(replica.model))
        self.stats["phases"] += 1
        self.stats["ranks"] = {s.name: r for s, r in zip(self.replicas[0].slots, agreed)}
        self.stats["factor_params"], self.stats["factored_dense_params"] = factor_params, dense_params
        if isinstance(self.comm, TorchComm):  # trainable counts of both groups, for the row
            counts = torch.zeros(self.world, dtype=torch.float64)
            counts[self.replicas[0].rank] = trainable[0]
            dist.all_reduce(counts)
            trainable = counts.tolist()
        self.stats["trainable_per_rank"] = trainable

    def _sync(self) -> None:
        mode = self.hp.sync_mode
        others = [r.others() for r in self.replicas]  # before the factors become dense again
        for replica in self.replicas:
            for f in replica.factors():
                f.a.requires_grad_(False)
                f.b.requires_grad_(False)
        with torch.no_grad():
            if mode == "product":
                dense = [[s.factor().compose() for s in r.slots] for r in self.replicas]
                self.comm.sum(dense, "world", "sync")
                for replica, ws in zip(self.replicas, dense):
                    for slot, w in zip(replica.slots, ws):
                        detach(replica.model, slot, w / self.world)
            else:
                values = []
                for replica in self.replicas:
                    team = group_of(replica.rank, self.world)
                    tensors = []
                    for f in replica.factors():
                        if mode == "learned":  # each factor from the group that trained it
                            f.a.mul_(1.0 if team == GROUP_A else 0.0)
                            f.b.mul_(1.0 if team == GROUP_B else 0.0)
                        tensors += [f.a.data, f.b.data]
                    values.append(tensors)
                self.comm.sum(values, "world", "sync")
                n_a = sum(1 for r in range(self.world) if group_of(r, self.world) == GROUP_A)
                div_a, div_b = (n_a, self.world - n_a) if mode == "learned" else (self.world, self.world)
                for replica in self.replicas:
                    for slot in replica.slots:
                        f = slot.factor()
                        f.a.div_(div_a)
                        f.b.div_(div_b)
                        detach(replica.model, slot)
            self.comm.sum(others, "world", "sync")
            for ts in others:
                for t in ts:
                    t.div_(self.world)


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
