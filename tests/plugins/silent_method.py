"""A method that trains on every batch it is given but never reports a step."""

import torch

from joulebench.harness.method import Method
from joulebench.harness.registry import register_method


@register_method
class Silent(Method):
    name = "silent"

    def train(self, ctx):
        opt = torch.optim.SGD(ctx.model.parameters(), lr=1e-3)
        for batch in ctx.batches():
            opt.zero_grad()
            ctx.loss(ctx.model, batch).backward()
            opt.step()
