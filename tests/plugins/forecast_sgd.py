"""A small submitted method for the submission tests: plain SGD with momentum, forecasting tasks only
(so that `joulebench check` runs it on the LTSF and load tasks and skips the rest)."""

import torch

from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.registry import register_method


@register_method
class ForecastSGD(Method):
    name = "forecast_sgd"
    description = "SGD with momentum on the forecasting tasks"
    params = {"lr": Param(0.01, low=1e-5, high=1.0, log=True), "momentum": Param(0.9, low=0.0, high=0.99)}

    @classmethod
    def incompatibility(cls, task, task_hp):
        return None if task.name == "ltsf" else "a forecasting method for the LTSF task only"

    def train(self, ctx):
        opt = torch.optim.SGD(ctx.model.parameters(), lr=self.hp.lr, momentum=self.hp.momentum)
        for batch in ctx.batches():
            opt.zero_grad(set_to_none=True)
            loss = ctx.loss(ctx.model, batch)
            loss.backward()
            opt.step()
            ctx.step(loss, batch)
