"""A method that hangs (the driver must kill it at the timeout and store a `timeout` row)."""

import time

from joulebench.harness.method import Method
from joulebench.harness.registry import register_method


@register_method
class Sleeps(Method):
    name = "sleeps"

    def train(self, ctx):
        time.sleep(3600)
