"""A method that records which modules its worker process has imported (for the import tests)."""

import json
import os
import sys

import torch

from joulebench.harness.method import Method
from joulebench.harness.registry import register_method


@register_method
class ModuleProbe(Method):
    name = "module_probe"
    description = "plain SGD steps; writes sorted(sys.modules) to $JOULEBENCH_PROBE"

    def train(self, ctx):
        opt = torch.optim.SGD(ctx.model.parameters(), lr=1e-3)
        for batch in ctx.batches():
            opt.zero_grad(set_to_none=True)
            loss = ctx.loss(ctx.model, batch)
            loss.backward()
            opt.step()
            ctx.step(loss, batch)
        with open(os.environ["JOULEBENCH_PROBE"], "w") as f:
            json.dump(sorted(sys.modules), f)
