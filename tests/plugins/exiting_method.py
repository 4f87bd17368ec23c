"""A method that kills its own process (the driver must store a `crashed` row)."""

import os

from joulebench.harness.method import Method
from joulebench.harness.registry import register_method


@register_method
class Exits(Method):
    name = "exits"

    def train(self, ctx):
        os._exit(3)
