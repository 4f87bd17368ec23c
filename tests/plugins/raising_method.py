"""A method that raises after its first step (the runner must store a `failed` row)."""

from joulebench.harness.method import Method
from joulebench.harness.registry import register_method


@register_method
class Raises(Method):
    name = "raises"

    def train(self, ctx):
        for batch in ctx.batches():
            ctx.step(ctx.loss(ctx.model, batch), batch, updates=0)
            raise RuntimeError("deliberate failure in a method")
