"""Shared machinery of the low-rank methods (OIALR, AB-training).

A *slot* is one weight of the model that may be factorised: the ``weight`` of a Linear or an
ungrouped Conv, and the projections of ``nn.MultiheadAttention`` (``in_proj_weight`` or the
separate q/k/v weights, and ``out_proj.weight``). A weight of shape (out, in, *kernel) is treated
as the matrix (out, in·kernel).

Factorising a slot deletes its dense Parameter and registers a factor module beside it; one
forward pre-hook on the root model recomposes every factorised weight as a plain tensor before
each forward pass. Recomposing at the root, not at each layer, matters: ``nn.MultiheadAttention``
reads ``out_proj.weight`` without calling ``out_proj``, and the Transformer layers' fast path reads
attention weights before the attention module runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

HOOK_ATTR = "_lowrank_hook"
SLOTS_ATTR = "_lowrank_slots"


@dataclass
class Slot:
    name: str          # dotted name of the weight in the model, e.g. "layers.0.linear1.weight"
    owner: nn.Module   # the module whose attribute it is
    attr: str          # the attribute name on the owner

    @property
    def factor_attr(self) -> str:
        return f"{self.attr}_lowrank"

    def factor(self) -> nn.Module | None:
        return getattr(self.owner, self.factor_attr, None)

    def dense(self) -> torch.Tensor:
        return getattr(self.owner, self.attr)

    @property
    def shape(self) -> torch.Size:
        factor = self.factor()
        return factor.shape if factor is not None else self.dense().shape


def weight_slots(model: nn.Module, exclude: str = "", min_dim: int = 2) -> list[Slot]:
    """Factorisable weights in module order (input side first); ``exclude``: comma-separated name
    parts; weights whose matrix has a side shorter than ``min_dim`` are left dense."""
    words = [w.strip() for w in exclude.split(",") if w.strip()]
    out_projs = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    slots: list[Slot] = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.MultiheadAttention):
            attrs = (["in_proj_weight"] if module._qkv_same_embed_dim
                     else ["q_proj_weight", "k_proj_weight", "v_proj_weight"])
            candidates = [(module, a, prefix + a) for a in attrs]
            candidates.append((module.out_proj, "weight", prefix + "out_proj.weight"))
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and id(module) not in out_projs:
            if getattr(module, "groups", 1) != 1:
                continue
            candidates = [(module, "weight", prefix + "weight")]
        else:
            continue
        for owner, attr, full in candidates:
            slot = Slot(full, owner, attr)
            weight = slot.dense() if slot.factor() is None else None
            if weight is not None and not isinstance(weight, nn.Parameter):
                continue
            shape = slot.shape
            rows, cols = shape[0], int(torch.Size(shape[1:]).numel())
            if min(rows, cols) < min_dim or any(w in full for w in words):
                continue
            slots.append(slot)
    return slots


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1)


def truncation_rank(s: torch.Tensor, cutoff: float, floor: int, current: int | None = None,
                    max_cut: float = 1.0) -> int:
    """Singular values ``s`` (descending): keep those >= cutoff × largest, at least ``floor``, and
    remove at most ``max_cut`` of the ``current`` rank in one go."""
    n = int(s.numel())
    current = n if current is None else current
    keep = int((s >= cutoff * s[0]).sum().item()) if n and s[0] > 0 else n
    lowest = max(current - int(max_cut * current), 1)
    return max(min(keep, n), min(floor, n), min(lowest, n))


def authors_rank(s: torch.Tensor, cutoff: float) -> int:
    """The OIALR authors' cut: keep singular values ≥ ``cutoff`` × the one at index ⌊1 % of the
    rank⌋ (the largest for ranks under 100), never fewer than that index (and at least one)."""
    n = int(s.numel())
    if n == 0:
        return 0
    floor = int(0.01 * n)
    reference = s[floor]
    if reference <= 0:
        return n
    return max(int((s >= cutoff * reference).sum().item()), floor, 1)


@dataclass(frozen=True)
class RankCut:
    """Where a factorised weight's rank is cut. ``rule="authors"`` is :func:`authors_rank`;
    ``rule="max_cut"`` (the earlier rule, an option) is :func:`truncation_rank` with ``floor``
    and ``max_cut``."""

    rule: str = "authors"
    cutoff: float = 0.1
    floor: int = 1
    max_cut: float = 1.0

    def keep(self, s: torch.Tensor, current: int | None = None) -> int:
        if self.rule == "authors":
            return authors_rank(s, self.cutoff)
        if self.rule == "max_cut":
            return truncation_rank(s, self.cutoff, self.floor, current, self.max_cut)
        raise ValueError(f"unknown rank cut rule {self.rule!r}")


class USV(nn.Module):
    """W = U Σ Vᵀ with U (out × r) and V (in × r) frozen buffers and Σ (r × r) trainable (OIALR)."""

    def __init__(self, u: torch.Tensor, s: torch.Tensor, v: torch.Tensor, shape: torch.Size) -> None:
        super().__init__()
        self.shape = torch.Size(shape)
        self.register_buffer("u", u.contiguous())
        self.register_buffer("v", v.contiguous())
        self.sigma = nn.Parameter(s.contiguous())

    @property
    def rank(self) -> int:
        return self.sigma.shape[0]

    def compose(self) -> torch.Tensor:
        return ((self.u @ self.sigma) @ self.v.T).reshape(self.shape)


class AB(nn.Module):
    """W = A B with A (out × r) and B (r × in), both Parameters (AB-training)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, shape: torch.Size) -> None:
        super().__init__()
        self.shape = torch.Size(shape)
        self.a = nn.Parameter(a.contiguous())
        self.b = nn.Parameter(b.contiguous())

    @property
    def rank(self) -> int:
        return self.a.shape[1]

    def compose(self) -> torch.Tensor:
        return (self.a @ self.b).reshape(self.shape)


def _refresh(model: nn.Module, *_args) -> None:
    for slot in getattr(model, SLOTS_ATTR, ()):
        factor = slot.factor()
        if factor is not None:
            setattr(slot.owner, slot.attr, factor.compose())


def refresh(model: nn.Module) -> None:
    """Recompose every factorised weight now (the root hook does this before each forward)."""
    _refresh(model)


def attach(model: nn.Module, slot: Slot, factor: nn.Module) -> None:
    """Replace the slot's dense Parameter by ``factor`` (a module with ``compose()``)."""
    weight = slot.owner._parameters.pop(slot.attr)
    factor.to(device=weight.device, dtype=weight.dtype)
    slot.owner.add_module(slot.factor_attr, factor)
    slots = getattr(model, SLOTS_ATTR, None)
    if slots is None:
        slots = []
        object.__setattr__(model, SLOTS_ATTR, slots)
    if all(s.name != slot.name for s in slots):
        slots.append(slot)
    if getattr(model, HOOK_ATTR, None) is None:
        object.__setattr__(model, HOOK_ATTR, model.register_forward_pre_hook(_refresh))
    with torch.no_grad():
        setattr(slot.owner, slot.attr, factor.compose())


def replace_factor(slot: Slot, factor: nn.Module) -> None:
    """Swap a slot's factor module for another (a new rank); the root hook stays."""
    setattr(slot.owner, slot.factor_attr, factor)
    with torch.no_grad():
        setattr(slot.owner, slot.attr, factor.compose())


def detach(model: nn.Module, slot: Slot, weight: torch.Tensor | None = None) -> nn.Parameter:
    """Make the slot dense again (``weight``, or the factors' product) and return its Parameter."""
    factor = slot.factor()
    with torch.no_grad():
        dense = (factor.compose() if weight is None else weight).detach().clone()
    delattr(slot.owner, slot.factor_attr)
    if slot.attr in slot.owner.__dict__:
        del slot.owner.__dict__[slot.attr]
    param = nn.Parameter(dense)
    slot.owner.register_parameter(slot.attr, param)
    slots = getattr(model, SLOTS_ATTR, [])
    slots[:] = [s for s in slots if s.name != slot.name]
    return param


def svd(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U, s, V of the weight's matrix (float64 for a stable decomposition, back to its dtype)."""
    u, s, vh = torch.linalg.svd(as_matrix(weight.detach()).double(), full_matrices=False)
    return u.to(weight.dtype), s.to(weight.dtype), vh.T.to(weight.dtype)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
