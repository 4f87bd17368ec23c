"""Backprop whose rank 1 is slower by a random few milliseconds per step: the ranks' own clocks
disagree, so a seconds budget must be agreed for both to stop at the same step."""

import random
import time

import torch

from joulebench.harness.method import Method
from joulebench.harness.registry import register_method


@register_method
class Jitter(Method):
    name = "jitter"

    def train(self, ctx):
        model = ctx.ddp(ctx.model)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        rng = random.Random(ctx.dist.rank)
        for batch in ctx.batches():
            opt.zero_grad()
            loss = ctx.loss(model, batch)
            loss.backward()
            opt.step()
            if ctx.dist.rank == 1:
                time.sleep(rng.uniform(0.0, 0.004))
            ctx.step(loss)
