"""One registry of tasks and methods.

Three ways in: the ``@register_task`` / ``@register_method`` decorators on modules inside the
project (found by walking ``joulebench.tasks`` and ``joulebench.methods``), Python entry points
(``joulebench.tasks`` / ``joulebench.methods``) of installed packages, and single plugin files
(``--plugin FILE.py``). A plugin that fails to import or breaks the contract is recorded with its
reason and left out; every other plugin keeps working.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import sys
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TypeVar

from joulebench.harness import identity
from joulebench.harness.method import Method
from joulebench.harness.params import Param, SpecError
from joulebench.harness.task import Task

T = TypeVar("T", bound=type)
_declared: list[type] = []
"""Every decorated class, in import order; a registry collects those of the modules it loads."""


def register_task(cls: type[Task]) -> type[Task]:
    _declared.append(cls)
    return cls


def register_method(cls: type[Method]) -> type[Method]:
    _declared.append(cls)
    return cls


def _declared_in(module_name: str) -> list[type]:
    prefix = module_name + "."
    return [c for c in _declared if c.__module__ == module_name or c.__module__.startswith(prefix)]


@dataclass
class Registry:
    tasks: dict[str, type[Task]] = field(default_factory=dict)
    methods: dict[str, type[Method]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    """plugin (module, entry point or file) → why it was left out."""
    origins: dict[type, str] = field(default_factory=dict)

    # -- lookup -------------------------------------------------------------------------------
    def task(self, name: str) -> type[Task]:
        if name not in self.tasks:
            raise SpecError(f"unknown task {name!r}; allowed: {', '.join(sorted(self.tasks))}"
                            + self._broken_hint(name))
        return self.tasks[name]

    def method(self, name: str) -> type[Method]:
        if name not in self.methods:
            raise SpecError(f"unknown method {name!r}; allowed: {', '.join(sorted(self.methods))}"
                            + self._broken_hint(name))
        return self.methods[name]

    def _broken_hint(self, name: str) -> str:
        broken = [k for k in self.errors if name in k]
        return f" ({broken[0]} failed to load: {self.errors[broken[0]]})" if broken else ""

    def code_hash(self, task: str, method: str) -> str:
        """The source hash of everything the experiment imports (see ``harness.identity``)."""
        return identity.code_hash(self.closure(task, method))

    def closure(self, task: str, method: str) -> dict[str, Path]:
        modules = [self.tasks[task].__module__, self.methods[method].__module__, *identity.TRAINING_LOOP]
        outside = {m.split(".")[0] for m in modules if not m.startswith(identity.PACKAGE + ".")}
        return identity.import_closure(modules, outside)

    # -- loading ------------------------------------------------------------------------------
    def load_module(self, module_name: str, origin: str | None = None) -> list[type]:
        try:
            importlib.import_module(module_name)
        except Exception as exc:  # a broken plugin must not take the others down
            self.errors[origin or module_name] = _one_line(exc)
            return []
        return self._collect(origin or module_name, _declared_in(module_name))

    def load_file(self, path: str | Path) -> list[type]:
        """Load a single-file plugin (``--plugin FILE.py``); returns the classes it registered."""
        path = Path(path).resolve()
        origin = str(path)
        if not path.is_file():
            raise SpecError(f"plugin file {path} does not exist")
        mod_name = "joulebench_plugin_" + hashlib.sha1(origin.encode()).hexdigest()[:10]
        try:
            spec = importlib.util.spec_from_file_location(mod_name, path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            self.errors[origin] = _one_line(exc)
            return []
        found = self._collect(origin, _declared_in(mod_name))
        if not found and origin not in self.errors:
            self.errors[origin] = "registers nothing: decorate a Task or Method subclass"
        return found

    def load_entry_point(self, group: str, ep) -> None:
        origin = f"entry point {ep.name} ({ep.value})"
        try:
            obj = ep.load()
        except Exception as exc:
            self.errors[origin] = _one_line(exc)
            return
        module = getattr(obj, "__name__", "") if not isinstance(obj, type) else obj.__module__
        found = _declared_in(module)
        if isinstance(obj, type) and obj not in found:
            found.append(obj)
        self._collect(origin, found)

    def _collect(self, origin: str, classes: list[type]) -> list[type]:
        found = []
        for cls in classes:
            if cls in self.origins:
                continue  # already registered (a module imported by another plugin)
            problem = contract_problem(cls)
            label = f"{origin}:{getattr(cls, '__name__', cls)}"
            if problem:
                self.errors[label] = problem
                continue
            table = self.tasks if issubclass(cls, Task) else self.methods
            if cls.name in table and table[cls.name] is not cls:
                self.errors[label] = f"name {cls.name!r} is already taken by {self.origins[table[cls.name]]}"
                continue
            table[cls.name] = cls
            self.origins[cls] = origin
            found.append(cls)
        return found


def contract_problem(cls: type) -> str | None:
    """Why a class cannot be registered, or None. Checked without running anything."""
    if not isinstance(cls, type) or not issubclass(cls, (Task, Method)):
        return "is neither a Task nor a Method subclass"
    kind = "task" if issubclass(cls, Task) else "method"
    if not getattr(cls, "name", "") or not str(cls.name).replace("_", "").replace("-", "").isalnum():
        return f"{kind} needs a class attribute name of letters, digits, '_' or '-'"
    if not all(isinstance(p, Param) for p in cls.params.values()):
        return "params must map names to joulebench.harness.params.Param"
    if issubclass(cls, Method):
        if cls.train is Method.train:
            return "method does not implement train(self, ctx)"
        if len(inspect.signature(cls.train).parameters) != 2:
            return "train must take exactly (self, ctx)"
        return None
    for hook in ("train_dataset", "build_model", "loss", "evaluate"):
        if getattr(cls, hook) is getattr(Task, hook):
            return f"task does not implement {hook}()"
    if not cls.presets:
        return "task declares no presets"
    if cls.primary_metric not in cls.metrics:
        return f"primary_metric {cls.primary_metric!r} is not among metrics {list(cls.metrics)}"
    for pname, preset in cls.presets.items():
        unknown = set(preset.params) - set(cls.params)
        if unknown:
            return f"preset {pname!r} sets undeclared parameters {sorted(unknown)}"
    return None


def _one_line(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}{where}"


_REGISTRY: Registry | None = None


def registry(plugins: list[str] | None = None) -> Registry:
    """The process-wide registry, loaded on first use; ``plugins`` adds single-file plugins."""
    global _REGISTRY
    if _REGISTRY is None:
        reg = Registry()
        for package in ("joulebench.tasks", "joulebench.methods"):
            pkg = importlib.import_module(package)
            for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
                if not info.name.startswith("_"):
                    reg.load_module(f"{package}.{info.name}")
        for group in ("joulebench.tasks", "joulebench.methods"):
            for ep in entry_points(group=group):
                reg.load_entry_point(group, ep)
        _REGISTRY = reg
    for plugin in plugins or ():
        if str(Path(plugin).resolve()) not in {str(o) for o in _REGISTRY.origins.values()}:
            _REGISTRY.load_file(plugin)
    return _REGISTRY


def reset_registry() -> None:
    """Forget what was loaded (tests use this to load plugins into a clean registry)."""
    global _REGISTRY
    _REGISTRY = None
