"""A method that declares a parameter it never reads (what `joulebench check` must report)."""

from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.registry import register_method


@register_method
class Unread(Method):
    name = "unread"
    params = {"lr": Param(0.01, low=1e-5, high=1.0), "warmup": Param(0, low=0, high=100)}

    def train(self, ctx):
        for batch in ctx.batches():
            loss = ctx.loss(ctx.model, batch)
            ctx.step(loss * self.hp.lr, updates=0)
