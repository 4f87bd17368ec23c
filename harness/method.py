"""The Method contract: how a model is trained, and nothing else.

A method is one small class in one file with its parameters declared beside it. The runner, not
the method, owns timing, energy, budgets, evaluation and storage; the method only sees a
:class:`~joulebench.harness.context.TrainContext`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from joulebench.harness.params import Hyper, Param
from joulebench.harness.task import Task

if TYPE_CHECKING:
    from torch import nn

    from joulebench.harness.context import TrainContext


class Method:
    """Base class of every training method.

    ``requires`` names task capabilities the method needs (see ``Task.capabilities``); the
    registry uses it to say, without running anything, which tasks a method can serve.
    ``search`` marks methods that run other runs as trials (their row carries every trial's cost).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    requires: ClassVar[frozenset[str]] = frozenset()
    search: ClassVar[bool] = False
    fits_fixed_models: ClassVar[bool] = False
    """True when ``train`` also has work on a model without trainable parameters (calibrating a
    classical algorithm's settings on the training data); otherwise the runner skips training."""

    def __init__(self, hp: Mapping[str, Any]) -> None:
        self.hp = hp if isinstance(hp, Hyper) else Hyper(hp)

    def train(self, ctx: TrainContext) -> None:
        raise NotImplementedError

    @classmethod
    def incompatibility(cls, task: type[Task], task_hp: Mapping[str, Any]) -> str | None:
        """Why this method cannot train this task, or None when it can."""
        return cls.missing(cls.requires, task.capabilities_for(task_hp), task.name)

    @staticmethod
    def missing(requires: frozenset[str], provided: frozenset[str], task: str) -> str | None:
        """The reason of ``incompatibility`` when a task lacks required capabilities, else None."""
        lacking = requires - provided
        return f"{task} does not provide {', '.join(sorted(lacking))}" if lacking else None

    @classmethod
    def uses_methods(cls, hp: Mapping[str, Any]) -> tuple[str, ...]:
        """Other registered methods whose code decides this method's result (a search's inner
        method): their import closures join this method's in the run_key."""
        return ()

    @classmethod
    def timeout_factor(cls, hp: Mapping[str, Any]) -> float:
        """How many preset-sized runs this method's run may take (a search: its trials)."""
        return 1.0

    def check_model(self, model: nn.Module) -> str | None:
        """A last compatibility check on the built model; return a reason to refuse it."""
        return None
