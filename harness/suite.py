"""Benchmark suites: versioned files that fix the workloads a method is scored on.

A suite is what turns the harness into a benchmark (as AlgoPerf's fixed workloads do for time):
each workload fixes a task, preset, task parameters, the validation target of the task's primary
metric, a budget cap and the seeds; the scoring rule (performance profiles up to ``tau_max``) is
part of the file. A method author changes none of it. Suites ship with the package
(``harness/suites/<name>.toml``); any other TOML file can be named by its path.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from joulebench.harness.params import SpecError
from joulebench.harness.spec import Budget, RunSpec, one_line_validation_error

SUITES_DIR = Path(__file__).with_name("suites")


class Scoring(BaseModel):
    """The rule: AlgoPerf-style performance profiles, integrated from 1 to ``tau_max``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tau_max: float = Field(default=4.0, gt=1.0)
    quantities: tuple[str, ...] = ("energy", "time")

    @field_validator("quantities")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [q for q in value if q not in ("energy", "time")]
        if unknown or not value:
            raise ValueError(f"quantities must be among energy, time (got {list(value)})")
        return value


class Workload(BaseModel):
    """One scored workload: where a method must get to (``target``) within ``budget``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    task: str
    preset: str
    task_params: dict[str, Any] = Field(default_factory=dict)
    target: float
    budget: Budget
    seeds: tuple[int, ...] | None = None
    eval_every: int | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _budget_set(self) -> Workload:
        if self.budget.is_empty():
            raise ValueError(f"workload {self.name!r}: budget needs steps, epochs or seconds")
        return self


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    version: int = Field(ge=1)
    description: str = ""
    device: str = "cpu"
    seeds: tuple[int, ...] = (0, 1, 2)
    scoring: Scoring = Field(default_factory=Scoring)
    workloads: tuple[Workload, ...] = Field(min_length=1)
    run_in_ci: bool = True
    """False for suites that need real data and GPUs (documented, not run in CI)."""

    @model_validator(mode="after")
    def _unique_names(self) -> Suite:
        names = [w.name for w in self.workloads]
        doubles = sorted({n for n in names if names.count(n) > 1})
        if doubles:
            raise ValueError(f"workload names must be unique; repeated: {', '.join(doubles)}")
        return self

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"

    def seeds_of(self, workload: Workload) -> tuple[int, ...]:
        return workload.seeds if workload.seeds is not None else self.seeds

    def run_specs(self, method: str, method_params: dict[str, Any] | None = None) -> list[tuple[Workload, RunSpec]]:
        """Every run the suite asks of one method, labelled with the suite as its campaign."""
        out = []
        for w in self.workloads:
            for seed in self.seeds_of(w):
                out.append((w, RunSpec.parse({
                    "task": w.task, "method": method, "preset": w.preset, "task_params": w.task_params,
                    "method_params": method_params or {}, "seed": seed,
                    "budget": w.budget.model_dump(exclude_none=True), "device": self.device,
                    "eval_every": w.eval_every, "timeout_s": w.timeout_s,
                    "campaign": f"suite:{self.label}"})))
        return out

    def cannot_train(self, method: str) -> dict[str, str]:
        """Workloads this method cannot train (workload name → the registry's reason): they are not
        run, and the score counts them as not reached and says why."""
        from joulebench.harness.params import resolve_params
        from joulebench.harness.registry import registry

        reg = registry()
        out = {}
        for w in self.workloads:
            task = reg.task_info(w.task)
            hp = resolve_params(f"task {w.task!r}", task.params, task.presets[w.preset].params, w.task_params)
            reason = reg.incompatibility(method, w.task, hp)
            if reason:
                out[w.name] = f"{method} cannot train {w.task}: {reason}"
        return out

    def check_against_registry(self) -> None:
        """Every task, preset and task parameter must exist (one line naming the first that does not)."""
        from joulebench.harness.params import resolve_params
        from joulebench.harness.registry import registry

        reg = registry()
        for w in self.workloads:
            task = reg.task(w.task)
            if w.preset not in task.presets:
                raise SpecError(f"suite {self.name}: workload {w.name!r}: task {w.task!r} has no preset "
                                f"{w.preset!r}; allowed: {', '.join(task.presets)}")
            resolve_params(f"suite {self.name}: workload {w.name!r}: task {w.task!r}", task.params,
                           task.presets[w.preset].params, w.task_params)


def run_suite(suite: Suite, method: str, results: Path, jobs: int = 1, plugins: list[str] | None = None,
              method_params: dict[str, Any] | None = None, report=None) -> list[dict[str, Any]]:
    """Run the suite's missing runs for one method (a campaign: stored run keys are skipped, so
    running it again resumes). Returns the summaries of the runs made now."""
    from joulebench.cluster.local import run_local
    from joulebench.harness.spec import resolve
    from joulebench.harness.store import Store

    done = Store(results).stored_keys()
    todo, seen = [], set()
    skipped = suite.cannot_train(method)  # not run there: no credit
    for w, spec in suite.run_specs(method, method_params):
        if w.name in skipped:
            continue
        resolved = resolve(spec)
        if resolved.run_key not in done and resolved.run_key not in seen:
            seen.add(resolved.run_key)
            todo.append(resolved)
    total = sum(len(suite.seeds_of(w)) for w in suite.workloads)
    for name, why in skipped.items():
        print(f"skipped {name}: {why} (scored as not reached)", flush=True)
    print(f"suite {suite.label} for {method}: {total} runs, {len(todo)} to run", flush=True)
    return run_local(todo, results, jobs, plugins, report=report) if todo else []


def available() -> dict[str, Path]:
    """Shipped suites by name."""
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.toml"))}


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name (``cpu-v1``) or a suite file by path; errors are one line."""
    text = str(name_or_path)
    path = available().get(text) or Path(text)
    if not path.is_file():
        names = ", ".join(available()) or "none"
        raise SpecError(f"no suite {text!r}: not a shipped suite ({names}) nor a file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"suite file {path} is not valid TOML: {exc}") from None
    data["workloads"] = data.pop("workload", data.get("workloads", []))
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise SpecError(one_line_validation_error(exc, Suite).replace("run spec", f"suite {path}")) from None


def describe(suite: Suite) -> str:
    lines = [f"suite {suite.label}: {suite.description}",
             f"  device {suite.device}; seeds {list(suite.seeds)}; scoring: performance profiles of "
             f"{' and '.join(suite.scoring.quantities)}-to-target, tau_max {suite.scoring.tau_max:g}"
             + ("" if suite.run_in_ci else "; needs real data and GPUs (not run in CI)")]
    for w in suite.workloads:
        params = ", ".join(f"{k}={v}" for k, v in w.task_params.items())
        budget = ", ".join(f"{k} {v:g}" for k, v in w.budget.model_dump(exclude_none=True).items())
        lines.append(f"  {w.name}: {w.task}/{w.preset} {params} | target val {w.target:g} | "
                     f"cap {budget} | seeds {list(suite.seeds_of(w))}")
    return "\n".join(lines)
