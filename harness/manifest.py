"""What every plugin declares, known without importing it: a cached manifest keyed by source hash.

Importing every task and method to list them or to resolve one spec cost seconds (torchvision and
torch's compiler stack through one task, xarray through another), in the driver and again in each
worker. So the registry reads each plugin's declarations (name, parameters, presets, metrics,
capabilities) from a manifest written the first time the plugin was imported, and imports a
plugin's module only when one of its classes is needed to run.

Why a cache and not light declaration modules or entry-point metadata: plugins stay one file (or
one package) with their parameters beside the code that reads them, and third-party plugins need
no second file. The cache is keyed by a hash of the plugin's source and of every ``joulebench``
module it imports (found by reading import statements, not by importing), so editing a plugin,
or a shared module whose ``Param`` objects it uses, rebuilds its entry on the next start.

An entry is only cached when its declarations survive the JSON round trip exactly; otherwise the
plugin is imported every time, as before. Hooks a class overrides (``capabilities_for``,
``incompatibility``, ``timeout_factor``) are code: the entry names them, and the registry imports
the class when it must call one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joulebench.harness import __version__, identity
from joulebench.harness.cache import cache_root
from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.task import Preset, Task

FORMAT = 2
"""Bump when the entry layout changes: part of every key."""
HOOKS = {Task: ("capabilities_for", "higher_is_better", "data_files"),
         Method: ("incompatibility", "timeout_factor")}


@dataclass
class PluginInfo:
    """The declarations of one task or method class, as plain data."""

    kind: str                      # "task" or "method"
    name: str
    module: str
    qualname: str
    origin: str                    # the plugin it came from: module, entry point or file
    description: str
    params: dict[str, Param]
    source_files: list[str]        # the import closure the run key hashes (``identity``)
    overrides: frozenset[str] = frozenset()
    presets: dict[str, Preset] = field(default_factory=dict)
    metrics: dict[str, bool] = field(default_factory=dict)
    primary_metric: str = ""
    capabilities: frozenset[str] = frozenset()
    default_capabilities: frozenset[str] = frozenset()   # capabilities_for(the declared defaults)
    data_params: tuple[str, ...] = ()   # parameters naming input files (``Task.data_params``)
    requires: frozenset[str] = frozenset()
    search: bool = False

    def higher_is_better(self, metric: str | None = None) -> bool:
        return self.metrics.get(metric or self.primary_metric, False)


def describe(cls: type, source_files: list[Path], origin: str) -> PluginInfo:
    """The declarations of a loaded class."""
    base = Task if issubclass(cls, Task) else Method
    overrides = frozenset(h for h in HOOKS[base] if getattr(cls, h).__func__ is not getattr(base, h).__func__)
    common = {"name": cls.name, "module": cls.__module__, "qualname": cls.__qualname__,
              "origin": origin,
              "description": cls.description, "params": dict(cls.params),
              "source_files": [str(p) for p in source_files], "overrides": overrides}
    if base is Task:
        return PluginInfo(kind="task", presets=dict(cls.presets), metrics=dict(cls.metrics),
                          primary_metric=cls.primary_metric, capabilities=frozenset(cls.capabilities),
                          data_params=tuple(cls.data_params),
                          default_capabilities=frozenset(cls.capabilities_for(
                              {k: p.default for k, p in cls.params.items()})),
                          **common)
    return PluginInfo(kind="method", requires=frozenset(cls.requires), search=bool(cls.search), **common)


# -- JSON that keeps tuples, frozensets and the two dataclasses ------------------------------------
def _encode(value: Any) -> Any:
    if isinstance(value, (Param, Preset)):
        return {"__" + type(value).__name__: {f.name: _encode(getattr(value, f.name))
                                              for f in dataclasses.fields(value)}}
    if isinstance(value, tuple):
        return {"__tuple": [_encode(v) for v in value]}
    if isinstance(value, frozenset):
        return {"__frozenset": sorted(_encode(v) for v in value)}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("non-string key")
        return {k: _encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot keep a {type(value).__name__} in the manifest")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, inner), = value.items()
        if key == "__tuple":
            return tuple(_decode(v) for v in inner)
        if key == "__frozenset":
            return frozenset(_decode(v) for v in inner)
        if key in ("__Param", "__Preset"):
            cls = Param if key == "__Param" else Preset
            return cls(**{k: _decode(v) for k, v in inner.items()})
    return {k: _decode(v) for k, v in value.items()}


def dump_infos(infos: list[PluginInfo], errors: dict[str, str]) -> str | None:
    """The entry of one plugin as JSON, or None when some declaration would not come back equal."""
    try:
        text = json.dumps({"infos": [_encode(dataclasses.asdict(i) | {"params": i.params,
                                                                      "presets": i.presets})
                                     for i in infos], "errors": errors})
    except (TypeError, ValueError):
        return None
    back, _ = load_infos(text)
    return text if back == infos else None


def load_infos(text: str) -> tuple[list[PluginInfo], dict[str, str]]:
    data = json.loads(text)
    return [PluginInfo(**_decode(raw)) for raw in data["infos"]], data["errors"]


# -- keys: the plugin's source and its joulebench import closure ----------------------------------
def locate(name: str) -> tuple[Path, bool] | None:
    """(file, is_package) of a module, found on disk without executing it or its parent packages
    (``importlib.util.find_spec`` of a submodule runs the parents; only the top package is asked)."""
    parts = name.split(".")
    head = 2 if parts[0] == "joulebench" and len(parts) > 1 else 1
    try:
        spec = importlib.util.find_spec(".".join(parts[:head]))
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not spec.submodule_search_locations:
        ok = len(parts) == head and spec.origin and spec.origin.endswith(".py")
        return (Path(spec.origin), False) if ok else None
    dirs = [Path(d) for d in spec.submodule_search_locations]
    for i, part in enumerate(parts[head:], start=head):
        for folder in dirs:
            if (folder / part / "__init__.py").is_file():
                dirs = [folder / part]
                break
            if (folder / f"{part}.py").is_file():
                return (folder / f"{part}.py", False) if i == len(parts) - 1 else None
        else:
            return None
    init = dirs[0] / "__init__.py"
    return (init, True) if init.is_file() else None


def plugin_files(name: str) -> dict[str, Path]:
    """Module name → file of a plugin: the module, or every module of its package."""
    found = locate(name)
    if found is None:
        return {}
    path, is_package = found
    if not is_package:
        return {name: path}
    out = {}
    for file in sorted(path.parent.rglob("*.py")):
        rel = file.relative_to(path.parent).with_suffix("").parts
        out[".".join([name, *rel[:-1]] if rel[-1] == "__init__" else [name, *rel])] = file
    return out


def closure_hash(module: str) -> str:
    """Hash of a plugin's files and of every ``joulebench`` module they import, transitively."""
    seen: dict[str, Path] = {}
    todo = list(plugin_files(module).items())
    while todo:
        name, path = todo.pop()
        if str(path) in seen:
            continue
        seen[str(path)] = path
        for imported in identity.imported_names(path, name):
            if not imported.startswith("joulebench."):
                continue
            found = locate(imported)
            if found is not None:
                todo.append((imported, found[0]))
    digest = hashlib.sha256(f"{FORMAT}|{__version__}|{module}".encode())
    for key in sorted(seen):
        digest.update(key.encode())
        digest.update(seen[key].read_bytes())
    return digest.hexdigest()[:20]


# -- the on-disk cache -------------------------------------------------------------------------
def manifest_dir() -> Path:
    return cache_root("manifest")


def entry_key(module: str, origin: str) -> str:
    """``<origin hash>-<closure hash>``: one entry per plugin and place on disk, replaced when its
    source changes. The place is part of the first half: two checkouts or virtualenvs sharing one
    cache (a worktree, a CI runner beside a development tree) keep an entry each instead of
    replacing each other's at every start, which made every start re-import every plugin."""
    files = plugin_files(module)
    where = str(min(files.values())) if files else ""
    return hashlib.sha256(f"{origin}|{where}".encode()).hexdigest()[:8] + "-" + closure_hash(module)


def cached_entry(module: str, key: str) -> tuple[list[PluginInfo], dict[str, str]] | None:
    path = manifest_dir() / f"{module}-{key}.json"
    try:
        return load_infos(path.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_entry(module: str, key: str, infos: list[PluginInfo], errors: dict[str, str]) -> bool:
    """Write an entry atomically; False when it cannot be kept (not JSON-exact, or no disk)."""
    text = dump_infos(infos, errors)
    if text is None:
        return False
    folder = manifest_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(f"{module}-{key.split('-')[0]}-*.json"):  # older entries are stale
            old.unlink(missing_ok=True)
        tmp = folder / f".{module}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / f"{module}-{key}.json")
    except OSError:
        return False
    return True
