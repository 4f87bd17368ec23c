"""One registry of tasks and methods.

Three ways in: the ``@register_task`` / ``@register_method`` decorators on modules inside the
project (found by walking ``joulebench.tasks`` and ``joulebench.methods``), Python entry points
(``joulebench.tasks`` / ``joulebench.methods``) of installed packages, and single plugin files
(``--plugin FILE.py``). A plugin that fails to import or breaks the contract is recorded with its
reason and left out; every other plugin keeps working.

Built-in modules and entry points are known from a cached manifest (``manifest.py``): their names,
parameters and presets are listed without importing them, and a plugin's module is imported the
first time one of its classes is looked up (``tasks[name]``, ``task(name)``). A run's worker thus
imports only its task and method.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from joulebench.harness import identity, manifest
from joulebench.harness.manifest import PluginInfo
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


class LazyTable(Mapping):
    """Name → class. Names (``in``, iteration) come from the plugins' declarations; a class is
    imported on first access through ``reg.import_class``."""

    def __init__(self, load) -> None:
        self.infos: dict[str, PluginInfo] = {}
        self.loaded: dict[str, type] = {}
        self._load = load

    def __getitem__(self, name: str) -> type:
        if name not in self.loaded and name in self.infos:
            self._load(self.infos[name])
        return self.loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in self.infos or name in self.loaded

    def __iter__(self) -> Iterator[str]:
        return iter(self.infos)

    def __len__(self) -> int:
        return len(self.infos)


@dataclass
class Registry:
    errors: dict[str, str] = field(default_factory=dict)
    """plugin (module, entry point or file) → why it was left out."""
    origins: dict[type, str] = field(default_factory=dict)
    code_hashes: dict[tuple[str, ...], str] = field(default_factory=dict)
    """closure modules → code hash, once per process (``code_hash``)."""

    def __post_init__(self) -> None:
        self.tasks = LazyTable(self.import_class)
        self.methods = LazyTable(self.import_class)

    # -- lookup -------------------------------------------------------------------------------
    def task(self, name: str) -> type[Task]:
        return self._lookup(self.tasks, "task", name)

    def method(self, name: str) -> type[Method]:
        return self._lookup(self.methods, "method", name)

    def _lookup(self, table: LazyTable, kind: str, name: str) -> type:
        try:
            return table[name]
        except KeyError:
            pass
        if name in table:  # declared, but its module no longer imports
            info = table.infos[name]
            raise SpecError(f"{kind} {name!r} failed to load: {self.errors.get(info.origin, 'unknown error')}")
        raise SpecError(f"unknown {kind} {name!r}; allowed: {', '.join(sorted(table))}"
                        + self._broken_hint(name))

    def task_info(self, name: str) -> PluginInfo:
        """A task's declarations, without importing it."""
        if name not in self.tasks.infos:
            self.task(name)  # the one-line error that lists the known tasks
        return self.tasks.infos[name]

    def method_info(self, name: str) -> PluginInfo:
        if name not in self.methods.infos:
            self.method(name)
        return self.methods.infos[name]

    def incompatibility(self, method: str, task: str,
                        task_hp: Mapping[str, Any] | None = None) -> str | None:
        """``Method.incompatibility`` (``task_hp`` None: the task's declared defaults), importing
        the classes only when they override what it depends on."""
        m, t = self.method_info(method), self.task_info(task)
        if "incompatibility" in m.overrides:
            hp = task_hp if task_hp is not None else {k: p.default for k, p in t.params.items()}
            return self.method(method).incompatibility(self.task(task), hp)
        if not m.requires:
            return None
        if task_hp is None:
            provided = t.default_capabilities
        elif "capabilities_for" in t.overrides:
            provided = self.task(task).capabilities_for(task_hp)
        else:
            provided = t.capabilities
        return Method.missing(m.requires, provided, task)

    def timeout_factor(self, method: str, hp: Mapping[str, Any]) -> float:
        cls = self.method(method) if "timeout_factor" in self.method_info(method).overrides else Method
        return cls.timeout_factor(hp)

    def import_class(self, info: PluginInfo) -> type | None:
        """Import the module of a declared class and register the class (or record why not)."""
        try:
            module = importlib.import_module(info.module)
            obj: Any = module
            for part in info.qualname.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            self.errors[info.origin] = _one_line(exc)
            return None
        found = self._collect(info.origin, [obj])
        return found[0] if found else None

    def _broken_hint(self, name: str) -> str:
        broken = [k for k in self.errors if name in k]
        return f" ({broken[0]} failed to load: {self.errors[broken[0]]})" if broken else ""

    def code_hash(self, task: str, method: str, method_hp: dict | None = None) -> str:
        """The source hash of everything the experiment imports (see ``harness.identity``);
        found from the declared module names, so nothing is imported to compute it.

        Computed once per (task, method, searched methods) in a process: a plan of 10 k runs
        walked the same closure 10 k times. A process keeps the code it imported at its start, so
        an edit made while it runs shows in the keys of the next process, not of this one."""
        modules = self.closure_modules(task, method, method_hp)
        if modules not in self.code_hashes:
            self.code_hashes[modules] = identity.code_hash(self.import_closure(modules))
        return self.code_hashes[modules]

    def closure(self, task: str, method: str, method_hp: dict | None = None) -> dict[str, Path]:
        return self.import_closure(self.closure_modules(task, method, method_hp))

    def import_closure(self, modules: tuple[str, ...]) -> dict[str, Path]:
        outside = {m.split(".")[0] for m in modules if not m.startswith(identity.PACKAGE + ".")}
        return identity.import_closure(modules, outside)

    def closure_modules(self, task: str, method: str, method_hp: dict | None = None) -> tuple[str, ...]:
        """The modules whose import closure keys a run: task, method, searched methods, the loop."""
        info = self.method_info(method)
        used = self.method(method).uses_methods(method_hp) if info.search and method_hp is not None else ()
        return (self.task_info(task).module, info.module,
                *(self.method_info(m).module for m in used), *identity.TRAINING_LOOP)

    def data_files(self, task: str, hp: Mapping[str, Any], preset: str) -> list[Path]:
        """``Task.data_files``; the task's module is imported only when it declares input files."""
        info = self.task_info(task)
        if "data_files" not in info.overrides or not any(hp.get(name) for name in info.data_params):
            return []
        return self.task(task).data_files(hp, preset)

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
            info = manifest.describe(cls, list(identity.import_closure([cls.__module__]).values()), origin)
            known = table.infos.get(cls.name)
            if known is not None and (known.module, known.qualname) != (info.module, info.qualname):
                self.errors[label] = f"name {cls.name!r} is already taken by {known.origin}"
                continue
            table.infos[cls.name] = info
            table.loaded[cls.name] = cls
            self.origins[cls] = origin
            found.append(cls)
        return found

    def declare(self, infos: list[PluginInfo], errors: dict[str, str]) -> None:
        """Add classes known from the manifest, not imported yet."""
        self.errors.update(errors)
        for info in infos:
            table = self.tasks if info.kind == "task" else self.methods
            known = table.infos.get(info.name)
            if known is not None and known.origin != info.origin:
                self.errors[f"{info.origin}:{info.qualname}"] = \
                    f"name {info.name!r} is already taken by {known.origin}"
                continue
            table.infos[info.name] = info

    def load_cached(self, module: str, origin: str, load) -> None:
        """Declare a plugin from its manifest entry, or run ``load()`` (which imports it) and keep
        what it registered as the entry for the next start."""
        key = manifest.entry_key(module, origin)
        entry = manifest.cached_entry(module, key)
        if entry is not None:
            self.declare(*entry)
            return
        before = set(self.origins)
        load()
        infos = [self.tasks.infos.get(c.name) if issubclass(c, Task) else self.methods.infos.get(c.name)
                 for c in self.origins if c not in before]
        errors = {k: v for k, v in self.errors.items() if k == origin or k.startswith(origin + ":")}
        manifest.store_entry(module, key, [i for i in infos if i is not None], errors)


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
                    name = f"{package}.{info.name}"
                    reg.load_cached(name, name, lambda name=name: reg.load_module(name))
        for group in ("joulebench.tasks", "joulebench.methods"):
            for ep in entry_points(group=group):
                reg.load_cached(ep.module, f"entry point {ep.name} ({ep.value})",
                                lambda group=group, ep=ep: reg.load_entry_point(group, ep))
        _REGISTRY = reg
    for plugin in plugins or ():
        if str(Path(plugin).resolve()) not in {str(o) for o in _REGISTRY.origins.values()}:
            _REGISTRY.load_file(plugin)
    return _REGISTRY


def reset_registry() -> None:
    """Forget what was loaded (tests use this to load plugins into a clean registry)."""
    global _REGISTRY
    _REGISTRY = None
