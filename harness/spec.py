"""RunSpec (what a user asks for) and its resolution into a fully specified run with a run_key.

The run_key hashes the *resolved* spec (every default filled in), the source of the task and method
plugins and the harness version: the same key means the same experiment, so a campaign can skip
keys that are already stored, and editing a method's code makes its old results stale by design.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from joulebench.harness import __version__
from joulebench.harness.params import SpecError, resolve_params


class Budget(BaseModel):
    """How much training a run may do; the first limit reached ends training."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: int | None = Field(default=None, gt=0)
    epochs: float | None = Field(default=None, gt=0)
    seconds: float | None = Field(default=None, gt=0)

    def is_empty(self) -> bool:
        return self.steps is None and self.epochs is None and self.seconds is None


class RunSpec(BaseModel):
    """One run as a user or a campaign asks for it. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    task: str
    method: str = "backprop"
    preset: str = "tiny"
    task_params: dict[str, Any] = Field(default_factory=dict)
    method_params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    budget: Budget | None = None
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    world_size: int = Field(default=1, ge=1)
    campaign: str = ""
    eval_every: int | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    parent_key: str | None = None

    @field_validator("task", "method")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @classmethod
    def parse(cls, data: dict[str, Any]) -> RunSpec:
        """Validate user input, turning pydantic's report into one line that names the fields."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(one_line_validation_error(exc, cls)) from None


def one_line_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields)
            parts.append(f"unknown key {where!r} (allowed: {allowed})")
        else:
            parts.append(f"{where}: {err['msg']}")
    return "invalid run spec: " + "; ".join(parts)


class ResolvedSpec(BaseModel):
    """A RunSpec with every default filled in; this is what is hashed and stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str
    method: str
    preset: str
    task_params: dict[str, Any]
    method_params: dict[str, Any]
    seed: int
    budget: Budget
    device: Literal["cpu", "cuda"]
    world_size: int
    campaign: str
    eval_every: int | None
    timeout_s: float
    parent_key: str | None
    source_hash: str
    harness_version: str = __version__

    @property
    def run_key(self) -> str:
        return run_key(self)

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def run_key(spec: ResolvedSpec) -> str:
    return hashlib.sha256(spec.canonical().encode()).hexdigest()[:20]


def resolve(spec: RunSpec) -> ResolvedSpec:
    """Fill defaults from the task's preset and the declared parameters; reject anything unknown."""
    from joulebench.harness.registry import registry

    reg = registry()
    task_cls = reg.task_info(spec.task)  # declarations only: the driver need not import torch
    method_cls = reg.method_info(spec.method)
    if spec.preset not in task_cls.presets:
        allowed = ", ".join(task_cls.presets)
        raise SpecError(f"task {spec.task!r} has no preset {spec.preset!r}; allowed: {allowed}")
    preset = task_cls.presets[spec.preset]
    task_hp = resolve_params(f"task {spec.task!r}", task_cls.params, preset.params, spec.task_params)
    method_hp = resolve_params(f"method {spec.method!r}", method_cls.params,
                               preset.method_defaults.get(spec.method), spec.method_params)
    reason = reg.incompatibility(spec.method, spec.task, task_hp)
    if reason:
        raise SpecError(f"method {spec.method!r} cannot train task {spec.task!r}: {reason}")
    budget = spec.budget if spec.budget and not spec.budget.is_empty() else Budget(**preset.budget)
    device = spec.device
    if device != "cpu":
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif not torch.cuda.is_available():
            raise SpecError("device 'cuda' was asked for but no CUDA device is visible here; "
                            "use --device cpu or auto")
    return ResolvedSpec(
        task=spec.task, method=spec.method, preset=spec.preset,
        task_params=task_hp, method_params=method_hp, seed=spec.seed, budget=budget,
        device=device, world_size=spec.world_size, campaign=spec.campaign,
        eval_every=spec.eval_every or preset.eval_every,
        timeout_s=spec.timeout_s or preset.timeout_s * reg.timeout_factor(spec.method, method_hp),
        parent_key=spec.parent_key,
        source_hash=reg.source_hash(spec.task, spec.method),
    )
