"""Backprop that fails while JOULEBENCH_TEST_FLAKY is set (an attempt that breaks after a good one)."""

import os

from joulebench.harness.method import Method
from joulebench.harness.registry import register_method


@register_method
class Flaky(Method):
    name = "flaky"

    def train(self, ctx):
        if os.environ.get("JOULEBENCH_TEST_FLAKY"):
            raise RuntimeError("flaky attempt")
        for batch in ctx.batches():
            ctx.step(ctx.loss(ctx.model, batch), updates=0)
