"""The learning-rate rules every gradient method shares."""

from __future__ import annotations

import torch

from joulebench.methods.optim import OPTIMIZER_PARAMS, make_optimizer, make_schedule, scaled_lr

HP = {k: p.default for k, p in OPTIMIZER_PARAMS.items()}


def test_linear_scaling_follows_the_global_batch() -> None:
    hp = {**HP, "optimizer": "sgd", "lr": 0.1, "lr_reference_batch": 256}
    assert scaled_lr(hp, 1024) == 0.4 and scaled_lr(hp, 128) == 0.05
    assert scaled_lr({**hp, "lr_reference_batch": 0}, 1024) == 0.1  # off by default
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], hp, global_batch=512)
    assert opt.param_groups[0]["lr"] == 0.2


def test_warmup_then_cosine_reaches_zero() -> None:
    hp = {**HP, "lr": 1.0, "warmup_steps": 4, "schedule": "cosine"}
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], hp)
    sched = make_schedule(opt, hp, total_steps=10, steps_per_epoch=5)
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    assert rates[4] == 1.0 and rates[-1] < 0.1 and rates == sorted(rates[:5]) + rates[5:]
