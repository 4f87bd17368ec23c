"""Optimisers and learning-rate schedules shared by methods that take optimiser steps."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from joulebench.harness.params import Param

OPTIMIZER_PARAMS = {
    "optimizer": Param("adam", choices=("sgd", "adam", "adamw")),
    "lr": Param(1e-3, low=1e-6, high=1.0, log=True),
    "weight_decay": Param(0.0, low=0.0, high=0.5),
    "momentum": Param(0.9, low=0.0, high=0.999, help="SGD only", applies={"optimizer": ("sgd",)}),
    "schedule": Param("constant", choices=("constant", "cosine", "halve_per_epoch")),
    "warmup_steps": Param(0, low=0, high=100_000, help="linear warm-up before the schedule"),
    "lr_reference_batch": Param(0, low=0, high=1_000_000,
                                help="linear scaling: lr x global batch / this (0: lr as given)"),
}


def scaled_lr(hp: Mapping, global_batch: int | None) -> float:
    """The linear scaling rule (Goyal et al. 2017): large global batches take proportionally larger
    steps, so a rate tuned at ``lr_reference_batch`` carries over to any number of ranks."""
    reference = int(hp.get("lr_reference_batch", 0) or 0)
    if reference <= 0 or not global_batch:
        return float(hp["lr"])
    return float(hp["lr"]) * global_batch / reference


def make_optimizer(params: Iterable[torch.nn.Parameter], hp: Mapping,
                   global_batch: int | None = None) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    lr = scaled_lr(hp, global_batch)
    if hp["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=hp["momentum"], weight_decay=hp["weight_decay"])
    cls = torch.optim.AdamW if hp["optimizer"] == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=hp["weight_decay"])


def make_schedule(opt: torch.optim.Optimizer, hp: Mapping, total_steps: int | None,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Per-step multiplier: linear warm-up, then constant, cosine to zero, or halving each epoch.

    None for a constant rate without warm-up: no scheduler work on every step.
    """
    warmup, kind = int(hp["warmup_steps"]), hp["schedule"]
    if kind == "constant" and warmup == 0:
        return None
    if kind == "cosine" and not total_steps:
        raise ValueError("schedule 'cosine' needs a step or epoch budget to know its length")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "cosine":
            progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "halve_per_epoch":
            return 0.5 ** (step // max(steps_per_epoch, 1))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
