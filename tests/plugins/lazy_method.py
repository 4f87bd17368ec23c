"""A method that trains but never reports its steps (fails `joulebench check`)."""

from joulebench.harness.method import Method
from joulebench.harness.registry import register_method


@register_method
class Lazy(Method):
    name = "lazy"

    def train(self, ctx):
        for _ in ctx.batches():
            break
