"""An installed third-party method package, found through the `joulebench.methods` entry point."""

import torch

from joulebench.harness.method import Method
from joulebench.harness.registry import register_method


@register_method
class ExternalSGD(Method):
    name = "external_sgd"

    def train(self, ctx):
        opt = torch.optim.SGD(ctx.model.parameters(), lr=0.05)
        for batch in ctx.batches():
            opt.zero_grad()
            loss = ctx.loss(ctx.model, batch)
            loss.backward()
            opt.step()
            ctx.step(loss, batch)
