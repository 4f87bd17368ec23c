"""Campaign files: a validated grid of task × method × parameters × seeds × device counts.

A campaign file (TOML) declares settings in three layers, later winning: the campaign's
``[defaults]``, a method's ``[methods.<name>]`` section, and each ``[[grid]]`` block. Lists in a
block's ``task_params`` / ``method_params`` expand as a Cartesian product; ``seeds`` and
``world_sizes`` multiply it. Expansion yields RunSpecs; their run_keys decide what is stored.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from joulebench.harness.identity import pinned_class
from joulebench.harness.params import SpecError
from joulebench.harness.spec import Budget, ResolvedSpec, RunSpec, one_line_validation_error, resolve

Seed = Annotated[int, Field(ge=0, lt=2**63)]
"""A seed the store can hold (int64): 2**63 once overflowed the row and stopped every restart."""
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""Campaign names become file names (list files, sbatch scripts, job names): no paths, no lines."""


class Settings(BaseModel):
    """What each layer may set (all optional: unset means "inherit")."""

    model_config = ConfigDict(extra="forbid")
    preset: str | None = None
    seeds: list[Seed] | None = None
    world_sizes: list[int] | None = None
    budget: Budget | None = None
    device: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    eval_every: int | None = Field(default=None, gt=0)
    task_params: dict[str, Any] = Field(default_factory=dict)
    method_params: dict[str, Any] = Field(default_factory=dict)
    # cluster resources (used by the SLURM executors)
    cpus_per_task: int | None = None
    gpus_per_node: int | None = None
    mem_gb: float | None = None
    time_min: int | None = None
    partition: str | None = None
    setup: list[str] | None = None  # shell lines before srun, e.g. "module load mpi/openmpi"
    hardware: str | None = None
    """The hardware class the runs' keys name, e.g. "cuda:NVIDIA A100-SXM4-40GB x4", for campaigns
    whose driver cannot see the nodes; default: this machine's, or ``slurm:partition=P`` when a
    partition is set."""
    launch_prefix: str | None = None  # wraps each sbatch array task's srun line, e.g. a perun monitor


class GridBlock(Settings):
    task: str
    methods: list[str]


class Campaign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    defaults: Settings = Field(default_factory=Settings)
    methods: dict[str, Settings] = Field(default_factory=dict)
    grid: list[GridBlock]
    max_parallel: int = Field(default=32, ge=1, description="SLURM array parallelism cap")
    order: Literal["interleaved", "cell"] = Field(
        default="interleaved", description="interleaved: every cell's i-th seed before any cell's "
        "(i+1)-th (the default; see expand_runs); cell: all seeds of a cell back to back")

    @classmethod
    def load(cls, path: str | Path) -> Campaign:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SpecError(f"campaign file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"campaign file {path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise SpecError(f"campaign file {path} is not text (binary?): expected TOML") from None
        except IsADirectoryError:
            raise SpecError(f"campaign file {path} is a directory") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(one_line_validation_error(exc, cls).replace("run spec", f"campaign {path}")) from None


def _merge(*layers: Settings) -> dict[str, Any]:
    """Later layers win key by key; parameter dicts merge name by name."""
    out: dict[str, Any] = {"task_params": {}, "method_params": {}}
    for layer in layers:
        for key, value in layer.model_dump(exclude_none=True).items():
            if key in ("task_params", "method_params"):
                out[key].update(value)
            elif key not in ("task", "methods"):
                out[key] = value
    return out


def _product(params: dict[str, Any]) -> list[dict[str, Any]]:
    names = list(params)
    choices = [v if isinstance(v, list) else [v] for v in params.values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*choices)]


RESOURCE_KEYS = ("cpus_per_task", "gpus_per_node", "mem_gb", "time_min", "partition", "setup", "launch_prefix")


def expand_runs(campaign: Campaign) -> list[tuple[RunSpec, dict[str, Any]]]:
    """Every run the campaign asks for, in a stable order, with its cluster resources (layered
    like everything else: campaign defaults < method section < grid block).

    Repeats are interleaved: every cell's i-th seed comes before any cell's (i+1)-th. On the
    2-core virtual machine this was measured on, identical runs drift by 1.2-1.8x (max/min) in
    blocks of seconds to tens of seconds; run cell by cell, a drift lands on all seeds of one cell and biases its median
    against the others, which the cost forecast then learns as a cell effect (estimate.py)."""
    runs: list[tuple[int, RunSpec, dict[str, Any]]] = []
    for block in campaign.grid:
        for method in block.methods:
            merged = _merge(campaign.defaults, campaign.methods.get(method, Settings()), block)
            res = {k: merged[k] for k in RESOURCE_KEYS if k in merged}
            for task_params in _product(merged["task_params"]):
                for method_params in _product(merged["method_params"]):
                    for world_size in merged.get("world_sizes", [1]):
                        for repeat, seed in enumerate(merged.get("seeds", [0])):
                            runs.append((repeat, RunSpec.parse({
                                "task": block.task, "method": method,
                                "preset": merged.get("preset", "tiny"),
                                "task_params": task_params, "method_params": method_params,
                                "seed": seed, "budget": merged.get("budget"),
                                "device": merged.get("device", "cpu"), "world_size": world_size,
                                "campaign": campaign.name, "eval_every": merged.get("eval_every"),
                                "timeout_s": merged.get("timeout_s"),
                                "hardware": merged.get("hardware")
                                or pinned_class(merged.get("partition"), None),
                            }), res))
    if campaign.order == "interleaved":
        runs.sort(key=lambda run: run[0])  # stable: cell order within each repeat is kept
    return [(spec, res) for _, spec, res in runs]


def expand(campaign: Campaign) -> list[RunSpec]:
    """Every run the campaign asks for, in a stable order."""
    return [spec for spec, _ in expand_runs(campaign)]


def resources(campaign: Campaign) -> dict[str, Any]:
    """Cluster resources of the campaign's defaults (per array task)."""
    return {k: v for k, v in campaign.defaults.model_dump(exclude_none=True).items() if k in RESOURCE_KEYS}


def resolve_runs(campaign: Campaign) -> list[tuple[ResolvedSpec, dict[str, Any]]]:
    """Resolved runs with their resources; a run named twice runs once (its first resources)."""
    out, seen = [], set()
    for spec, res in expand_runs(campaign):
        r = resolve(spec)
        if r.run_key not in seen:
            seen.add(r.run_key)
            out.append((r, res))
    return out


def resource_groups(runs: list[tuple[ResolvedSpec, dict[str, Any]]]
                    ) -> list[tuple[dict[str, Any], list[ResolvedSpec]]]:
    """Runs grouped by identical resources (one SLURM array per group and world size)."""
    groups: dict[str, tuple[dict[str, Any], list[ResolvedSpec]]] = {}
    for spec, res in runs:
        groups.setdefault(json.dumps(res, sort_keys=True), (res, []))[1].append(spec)
    return list(groups.values())


def resolve_all(specs: list[RunSpec]) -> list[ResolvedSpec]:
    resolved, seen = [], set()
    for spec in specs:
        r = resolve(spec)
        if r.run_key not in seen:  # a grid that names the same run twice runs it once
            seen.add(r.run_key)
            resolved.append(r)
    return resolved
