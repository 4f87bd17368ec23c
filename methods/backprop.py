"""Backpropagation: the baseline every other method is measured against."""

from __future__ import annotations

import torch

from joulebench.harness.context import TrainContext
from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.registry import register_method
from joulebench.methods.optim import OPTIMIZER_PARAMS, make_optimizer, make_schedule


@register_method
class Backprop(Method):
    name = "backprop"
    description = "Gradient descent with exact gradients from backpropagation (SGD/Adam/AdamW)"
    params = {**OPTIMIZER_PARAMS, "clip_norm": Param(0.0, low=0.0, high=100.0, help="0: off")}

    def train(self, ctx: TrainContext) -> None:
        model = ctx.ddp(ctx.model)
        opt = make_optimizer(model.parameters(), self.hp, ctx.global_batch)
        schedule = make_schedule(opt, self.hp, ctx.planned_steps, ctx.steps_per_epoch)
        for batch in ctx.batches():
            opt.zero_grad(set_to_none=True)
            loss = ctx.loss(model, batch)
            loss.backward()
            if self.hp.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.hp.clip_norm)
            opt.step()
            if schedule:
                schedule.step()
            ctx.step(loss, batch)
