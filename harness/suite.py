"""Benchmark suites: versioned files that fix the workloads a method is scored on.

A suite is what turns the harness into a benchmark (as AlgoPerf's fixed workloads do for time):
each workload fixes a task, preset, task parameters, the validation target of the task's primary
metric, a budget cap and the seeds; the scoring rule (performance profiles up to ``tau_max``) is
part of the file. A method author changes none of it. Suites ship with the package
(``harness/suites/<name>.toml``); any other TOML file can be named by its path.

Targets are measured, not typed, where the suite names a ``target_rule``: ``joulebench suite
calibrate`` derives each workload's target from the baseline's stored runs and writes it with a
``target_set`` record (baseline, seeds, the per-seed values, the date and the task's code hash).
A task's code hash is the hash of the task module's import closure (``task_code``: the task, its
models and data, and the harness modules it imports); where it differs from the one a target was
set on, ``suite show`` and ``score`` flag the target as stale: the workload may no longer mean what
the target was measured on (cpu-v1's load-mlp after the load task's change, 4f901ad).
"""

from __future__ import annotations

import datetime
import statistics
import tomllib
from enum import StrEnum
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


class TargetRule(StrEnum):
    """How a suite's targets are derived from its baseline's stored runs."""

    MEDIAN_BEST = "median-best"
    """The median over the suite's seeds of the baseline's best validation value of the task's
    primary metric within the workload's cap (every validation point of a run, the final one
    included, lies within the cap). As AlgoPerf sets its targets from its baselines: the baseline's
    median seed reaches the target, by construction, at its best point."""

    def describe(self) -> str:
        return ("median over seeds of the baseline's best validation value of the primary metric "
                "within the cap")

    def apply(self, best: list[float]) -> float:
        return float(statistics.median(best))


class TargetSet(BaseModel):
    """Where a workload's target came from: what ``suite calibrate`` measured it on."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    baseline: str
    seeds: tuple[int, ...] = Field(min_length=1)
    best: tuple[float, ...] | None = None
    """The baseline's best validation value per seed (in ``seeds``' order); None for a typed target
    whose code alone was recorded (cpu-v1)."""
    task_code: str = Field(pattern=r"^[0-9a-f]{16}$")
    """The task's code hash (``task_code``) when the target was set."""
    date: datetime.date

    @model_validator(mode="after")
    def _one_value_per_seed(self) -> TargetSet:
        if self.best is not None and len(self.best) != len(self.seeds):
            raise ValueError(f"target_set: {len(self.best)} best values for {len(self.seeds)} seeds")
        return self


class Workload(BaseModel):
    """One scored workload: where a method must get to (``target``) within ``budget``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    task: str
    preset: str
    task_params: dict[str, Any] = Field(default_factory=dict)
    target: float | None = None
    """None only in a suite with a ``target_rule`` not calibrated yet (it runs; it cannot score)."""
    target_set: TargetSet | None = None
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
    target_rule: TargetRule | None = None
    """None: targets typed in the file (cpu-v1, gpu-v1). Set: every target measured by this rule."""

    @model_validator(mode="after")
    def _unique_names(self) -> Suite:
        names = [w.name for w in self.workloads]
        doubles = sorted({n for n in names if names.count(n) > 1})
        if doubles:
            raise ValueError(f"workload names must be unique; repeated: {', '.join(doubles)}")
        return self

    @model_validator(mode="after")
    def _targets_follow_the_rule(self) -> Suite:
        for w in self.workloads:
            problem = _target_problem(w, self.target_rule, self.seeds_of(w))
            if problem:
                raise ValueError(f"workload {w.name!r}: {problem}")
        return self

    @property
    def calibrated(self) -> bool:
        return all(w.target is not None for w in self.workloads)

    def require_targets(self) -> None:
        """Scoring needs every target: one line naming the command that measures them."""
        missing = [w.name for w in self.workloads if w.target is None]
        if missing:
            raise SpecError(f"suite {self.label}: no target yet for {', '.join(missing)}: run the baseline "
                            f"(`joulebench suite run {self.name} --method BASELINE`), then "
                            f"`joulebench suite calibrate {self.name} --method BASELINE --write FILE`")

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


def _target_problem(w: Workload, rule: TargetRule | None, seeds: tuple[int, ...]) -> str | None:
    """Why a workload's target does not fit the suite's rule, or None."""
    if rule is None:
        return "target: Field required (or name the suite's target_rule)" if w.target is None else None
    if w.target is None:
        return "target_set without a target" if w.target_set is not None else None  # not calibrated yet
    ts = w.target_set
    if ts is None or ts.best is None:
        return f"target {w.target:g} has no target_set with best values: targets follow {rule.value}, run `suite calibrate`"
    if tuple(ts.seeds) != tuple(seeds):
        return f"target_set seeds {list(ts.seeds)} are not the workload's seeds {list(seeds)}"
    if w.target != rule.apply(list(ts.best)):
        return (f"target {w.target!r} is not the {rule.value} of its recorded values "
                f"({rule.apply(list(ts.best))!r}): targets are measured, not typed")
    return None


def task_code(task: str, roots: dict[str, Path] | None = None) -> str:
    """The task's code hash: its module's import closure, hashed as run keys hash code
    (``identity.code_hash``). ``roots`` reads another source tree (a past commit's)."""
    from joulebench.harness import identity
    from joulebench.harness.registry import registry

    module = registry().task_info(task).module
    return identity.code_hash(identity.import_closure([module], (), roots))


def stale_line(w: Workload) -> str | None:
    """"target set on code X; the task is now Y: stale" where the task's code changed since."""
    if w.target_set is None:
        return None
    now = task_code(w.task)
    if now == w.target_set.task_code:
        return None
    return (f"{w.name}: target set on code {w.target_set.task_code} ({w.target_set.date}); "
            f"the task {w.task!r} is now {now}: stale")


def stale_lines(suite: Suite) -> list[str]:
    return [line for line in map(stale_line, suite.workloads) if line]


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


def suite_path(name_or_path: str | Path) -> Path:
    """The file of a shipped suite (by name) or a suite file (by path); one line where neither."""
    text = str(name_or_path)
    path = available().get(text) or Path(text)
    if not path.is_file():
        names = ", ".join(available()) or "none"
        raise SpecError(f"no suite {text!r}: not a shipped suite ({names}) nor a file")
    return path


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name (``cpu-v1``) or a suite file by path; errors are one line."""
    path = suite_path(name_or_path)
    return parse_suite(path.read_text(), path)


def parse_suite(text: str, path: Path) -> Suite:
    """A suite from a suite file's text (``path`` names it in errors, which are one line)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"suite file {path} is not valid TOML: {exc}") from None
    data["workloads"] = data.pop("workload", data.get("workloads", []))
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise SpecError(one_line_validation_error(exc, Suite).replace("run spec", f"suite {path}")) from None


def describe(suite: Suite) -> str:
    rule = (f"targets: {suite.target_rule.value} ({suite.target_rule.describe()})" if suite.target_rule
            else "targets typed in the file")
    lines = [f"suite {suite.label}: {suite.description}",
             f"  device {suite.device}; seeds {list(suite.seeds)}; scoring: performance profiles of "
             f"{' and '.join(suite.scoring.quantities)}-to-target, tau_max {suite.scoring.tau_max:g}"
             + ("" if suite.run_in_ci else "; needs real data and GPUs (not run in CI)"),
             f"  {rule}"]
    for w in suite.workloads:
        params = ", ".join(f"{k}={v}" for k, v in w.task_params.items())
        budget = ", ".join(f"{k} {v:g}" for k, v in w.budget.model_dump(exclude_none=True).items())
        target = "not calibrated" if w.target is None else f"{w.target:.6g}"
        lines.append(f"  {w.name}: {w.task}/{w.preset} {params} | target val {target} | "
                     f"cap {budget} | seeds {list(suite.seeds_of(w))}")
        if w.target_set is not None:
            ts = w.target_set
            values = "" if ts.best is None else f" from best {', '.join(f'{v:.6g}' for v in ts.best)}"
            lines.append(f"    set {ts.date} by {ts.baseline} seeds {list(ts.seeds)}{values}, "
                         f"task code {ts.task_code}")
        elif w.target is not None:
            lines.append("    task code not recorded with the target: whether it is stale is unknown")
        stale = stale_line(w)
        if stale:
            lines.append(f"    STALE: {stale}")
    return "\n".join(lines)
