"""A plugin that registers a method without train() and a valid one beside it."""

import torch

from joulebench.harness.method import Method
from joulebench.harness.registry import register_method


@register_method
class NoTrain(Method):
    name = "no_train"


@register_method
class Fine(Method):
    name = "fine"

    def train(self, ctx):
        opt = torch.optim.Adam(ctx.model.parameters(), lr=1e-2)
        for batch in ctx.batches():
            opt.zero_grad()
            loss = ctx.loss(ctx.model, batch)
            loss.backward()
            opt.step()
            ctx.step(loss, batch)
