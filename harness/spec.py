"""RunSpec (what a user asks for) and its resolution into a fully specified run with a run_key.

The run_key hashes exactly what determines a result (``IDENTITY``): task, preset, the parameters
that apply, budget, seed, world size, device kind, evaluation cadence, parent search, the source
of the experiment's import closure, the input data's content and the hardware class. Campaign
name and timeout are labels stored in the row, never identity: the same experiment under two
campaigns is one key, so the second skips it. ``cell_key`` is the key without the seed (one
leaderboard cell); ``lineage_key`` is the cell without the code (the same configuration across
code versions, so the leaderboard can mark cells of older code).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from joulebench.harness import __version__, identity
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
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    budget: Budget | None = None
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    world_size: int = Field(default=1, ge=1)
    campaign: str = ""
    eval_every: int | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    parent_key: str | None = None
    hardware: str | None = None
    """The hardware class, when the driver cannot see the node (a SLURM campaign's pin)."""

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
    code_hash: str
    data_fingerprint: str | None
    hardware_class: str
    harness_version: str = __version__

    # computed once per (frozen) spec: a 10 k-run plan asked for them ~5 times each
    @cached_property
    def run_key(self) -> str:
        return _digest(self.identity())

    @cached_property
    def cell_key(self) -> str:
        return _digest({k: v for k, v in self.identity().items() if k != "seed"})

    @cached_property
    def lineage_key(self) -> str:
        return _digest({k: v for k, v in self.identity().items() if k not in ("seed", "code_hash")})

    def identity(self) -> dict[str, Any]:
        """The fields that make two runs the same experiment (labels left out)."""
        return {"key_scheme": KEY_SCHEME, **self.model_dump(mode="json", include=set(IDENTITY))}

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


KEY_SCHEME = "v2"
IDENTITY = ("task", "method", "preset", "task_params", "method_params", "seed", "budget", "device",
            "world_size", "eval_every", "parent_key", "code_hash", "data_fingerprint", "hardware_class")
LABELS = ("campaign", "timeout_s", "harness_version")
"""Stored with the row, never part of the key (results directory and host are not in the spec)."""


def _digest(fields: dict[str, Any]) -> str:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def run_key(spec: ResolvedSpec) -> str:
    return spec.run_key


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
    device = _device(spec.device)
    return ResolvedSpec(
        task=spec.task, method=spec.method, preset=spec.preset,
        task_params=task_hp, method_params=method_hp, seed=spec.seed, budget=budget,
        device=device, world_size=spec.world_size, campaign=spec.campaign,
        eval_every=spec.eval_every or preset.eval_every,
        timeout_s=spec.timeout_s or run_timeout(preset.timeout_s, preset.budget, budget,
                                                reg.timeout_factor(spec.method, method_hp)),
        parent_key=spec.parent_key,
        code_hash=reg.code_hash(spec.task, spec.method, method_hp),
        data_fingerprint=identity.data_fingerprint(reg.data_files(spec.task, task_hp, spec.preset)),
        hardware_class=spec.hardware or identity.hardware_class(device, spec.world_size),
    )


def run_timeout(preset_s: float, preset_budget: Mapping[str, float], budget: Budget,
                runs: float = 1.0) -> float:
    """The timeout of a run training ``budget`` as ``runs`` runs (a search: its trials + 1), from
    the preset's timeout, which is sized for one run of the preset's budget.

    Each run's share is the preset's timeout scaled by how much more training is asked for: the
    ratio of the budget's steps (epochs) to the preset's steps (epochs), the smaller where both
    are given (the first limit reached ends training), never below 1 (set-up and evaluation do
    not shrink with the budget). Trials train the search's steps and epochs or the preset's,
    never more than that share. A seconds limit is added once: it bounds the whole run (a
    search starts no trial past it, and trials are not handed it). A budget that shares no unit
    with the preset's (epochs against a preset's steps) keeps the preset's share: how many steps
    an epoch is is not known before the data is; pass ``timeout_s``."""
    ratios = [getattr(budget, unit) / preset_budget[unit] for unit in ("steps", "epochs")
              if getattr(budget, unit) is not None and preset_budget.get(unit)]
    scale = max(1.0, min(ratios)) if ratios else 1.0
    return preset_s * scale * runs + (budget.seconds or 0.0)


def _device(asked: str) -> str:
    if asked == "cpu":
        return asked
    import torch

    if asked == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise SpecError("device 'cuda' was asked for but no CUDA device is visible here; "
                        "use --device cpu or auto")
    return asked
