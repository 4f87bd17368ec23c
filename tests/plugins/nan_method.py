"""A method whose learning rate makes the loss overflow (the run must end `diverged`)."""

import torch

from joulebench.harness.method import Method
from joulebench.harness.registry import register_method


@register_method
class Explodes(Method):
    name = "explodes"

    def train(self, ctx):
        opt = torch.optim.SGD(ctx.model.parameters(), lr=1e12)
        for batch in ctx.batches():
            opt.zero_grad()
            loss = ctx.loss(ctx.model, batch) * 1e30
            loss.backward()
            opt.step()
            ctx.step(loss, batch)
