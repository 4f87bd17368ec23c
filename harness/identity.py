"""What makes two runs the same experiment: the code they import, the data they read, the hardware.

The run_key must change exactly when the result can change. Three inputs are not in the user's
spec and are found here:

- **Code**: the source of every module in the task's and the method's import closure inside
  joulebench (plus a plugin's own file or package), found by reading ``import`` statements
  statically (``ast``), so nothing heavy is imported to compute it, and a module the experiment
  does not import leaves its key alone. Imports inside functions count too (conservative).
- **Data**: a content fingerprint of the input files a task reads from the user's disk (the
  ``full`` presets). Files up to ``FULL_HASH_BYTES`` are hashed whole; larger files by size plus
  16 evenly spaced 1 MiB samples; a directory tree by the list of (path, size) of every file plus
  whole-content hashes of its small metadata files and sampled hashes of up to 256 data files.
  Size + mtime alone is never used: an in-place fix of a CSV changes the key. Results are cached
  per (path, size, mtime, ctime, inode) within a process, so an unchanged file is read once.
- **Hardware class**: ``cpu:<model>`` or ``cuda:<gpu model> x<count>``; a campaign that cannot
  know the node (a SLURM array) pins the class from its partition and constraint instead.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

PACKAGE = "joulebench"
FULL_HASH_BYTES = 256 * 2**20
SAMPLE_BYTES = 2**20
SAMPLES_PER_FILE = 16
FILES_PER_TREE = 256
METADATA_NAMES = (".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json")
BOOKKEEPING = ("joulebench.harness.registry", "joulebench.harness.identity")
"""Modules every plugin imports only to be registered and hashed; they never touch a run's
computation, so editing them leaves every key alone (their own imports are not followed)."""
TRAINING_LOOP = ("joulebench.harness.context",)
"""What every method runs inside (``ctx.batches()``, the budget): part of every closure."""


def new_attempt_id() -> str:
    """One attempt of a run: every attempt is kept under its own id."""
    return uuid.uuid4().hex


# -- code -----------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def package_roots() -> dict[str, Path]:
    """``joulebench.<top>`` → its source directory (the repository's folders in an editable
    install, site-packages otherwise), found from this file without importing anything else."""
    harness = Path(__file__).resolve().parent
    base = harness.parent
    return {entry.name: entry for entry in base.iterdir()
            if entry.is_dir() and (entry / "__init__.py").is_file()}


def module_file(name: str, roots: dict[str, Path] | None = None) -> Path | None:
    """The source file of a joulebench module name, or None if it is not one of ours."""
    roots = package_roots() if roots is None else roots
    parts = name.split(".")
    if parts[0] != PACKAGE or len(parts) < 2 or parts[1] not in roots:
        return None
    path = roots[parts[1]].joinpath(*parts[2:])
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def imported_names(path: Path, module: str) -> frozenset[str]:
    """Module names a file imports at run time (absolute; relative imports resolved against
    ``module``), also inside functions, never under ``if TYPE_CHECKING:``.

    The one import scanner of the project: the run key's code closure and the plugin manifest's
    cache key both walk it. Parsing costs ~10-50 ms per large module, paid at every start for the
    ~20-40 modules of a closure, so results are kept per (path, size, mtime) in this process and
    in a small cache file beside the manifest, keyed by (path, size, mtime, ctime, inode): ctime
    cannot be set back, so an edit that restores size and mtime is parsed again too."""
    st = path.stat()
    return _scan_cached(str(path), module, f"{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}")


@lru_cache(maxsize=8192)
def _scan_cached(path: str, module: str, stamp: str) -> frozenset[str]:
    disk = _scan_cache()
    entry = f"{path}|{module}|{stamp}"
    if entry in disk.names:
        return frozenset(disk.names[entry])
    found = frozenset(_scan(Path(path), module))
    disk.put(entry, sorted(found))
    return found


def _scan(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return names


class ScanCache:
    """Per-file import lists on disk (one JSON file, replaced atomically; a lost update or an
    unreadable file only means a file is parsed again, never a wrong closure: entries are keyed
    by path, size and mtime)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.names: dict[str, list[str]] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.names = {}
        self.dirty = False

    def put(self, entry: str, names: list[str]) -> None:
        self.names[entry] = names
        self.dirty = True

    def flush(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
            tmp.write_text(json.dumps(self.names))
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError:
            pass


@lru_cache(maxsize=1)
def _scan_cache() -> ScanCache:
    from joulebench.harness.cache import cache_root

    return ScanCache(cache_root("imports") / "imports.json")


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (imports for type hints only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
            or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def import_closure(modules: Iterable[str], local_prefixes: Iterable[str] = (),
                   roots: dict[str, Path] | None = None) -> dict[str, Path]:
    """Every joulebench module (and module under ``local_prefixes``) reachable by imports;
    ``roots`` maps ``joulebench.<top>`` to source folders (default: this installation's)."""
    prefixes = tuple(local_prefixes)
    found: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in found or name in BOOKKEEPING:
            continue
        path = module_file(name, roots) or _local_file(name, prefixes)
        if path is None:
            continue
        found[name] = path
        todo.extend(_parents(name))
        todo.extend(n for n in imported_names(path, name) if n not in found)
    _scan_cache().flush()
    return found


def _local_file(name: str, prefixes: tuple[str, ...]) -> Path | None:
    """A plugin's own modules (outside joulebench): found through sys.modules once loaded."""
    if not any(name == p or name.startswith(p + ".") for p in prefixes):
        return None
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return Path(path) if path and Path(path).is_file() else None


def code_hash(closure: dict[str, Path], extra_files: Iterable[Path] = ()) -> str:
    """A hash of the sources of a closure (module names in, so a moved module counts)."""
    digest = hashlib.sha256()
    for name, path in sorted(closure.items()):
        digest.update(name.encode() + b"\0" + _file_digest(path) + b"\0")
    for path in sorted(set(extra_files)):
        digest.update(str(path.name).encode() + b"\0" + _file_digest(path) + b"\0")
    return digest.hexdigest()[:16]


@lru_cache(maxsize=4096)
def _source_digest(path: str, size: int, mtime_ns: int) -> bytes:
    return hashlib.sha256(Path(path).read_bytes()).digest()


def _file_digest(path: Path) -> bytes:
    st = path.stat()
    return _source_digest(str(path), st.st_size, st.st_mtime_ns)


# -- data -----------------------------------------------------------------------------------------
def data_fingerprint(paths: Iterable[Path]) -> str | None:
    """A content fingerprint of the input files or trees; None when a run reads none."""
    paths = sorted({Path(p).resolve() for p in paths})
    if not paths:
        return None
    digest = hashlib.sha256()
    for path in paths:
        if path.is_dir():
            digest.update(b"D" + _tree_fingerprint(path).encode())
        elif path.is_file():
            digest.update(b"F" + _content_fingerprint(path).encode())
        else:
            digest.update(b"M" + str(path).encode())  # missing: the task's set-up will say so
    return digest.hexdigest()[:16]


def _content_fingerprint(path: Path) -> str:
    st = path.stat()
    return _cached_content(str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@lru_cache(maxsize=65536)
def _cached_content(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    """Content hash, cached per process by (path, size, mtime, ctime, inode): ctime changes on every
    write and cannot be set back, so an in-place edit that restores the mtime is still seen."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: fh.read(2**22), b""):
                digest.update(block)
        else:
            step = (size - SAMPLE_BYTES) // (SAMPLES_PER_FILE - 1)
            for i in range(SAMPLES_PER_FILE):
                fh.seek(i * step)
                digest.update(fh.read(SAMPLE_BYTES))
    return digest.hexdigest()


def _tree_fingerprint(root: Path) -> str:
    listing: list[tuple[str, int]] = []
    metadata: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            listing.append((str(path.relative_to(root)), path.stat().st_size))
            if name in METADATA_NAMES:
                metadata.append(path)
    digest = hashlib.sha256(json.dumps(listing).encode())
    for path in metadata:
        digest.update(_content_fingerprint(path).encode())
    data = [root / rel for rel, _ in listing if Path(rel).name not in METADATA_NAMES]
    stride = max(len(data) // FILES_PER_TREE, 1)
    for path in data[::stride][:FILES_PER_TREE]:
        digest.update(_content_fingerprint(path).encode())
    return digest.hexdigest()


# -- hardware -------------------------------------------------------------------------------------
def hardware_class(device: str, world_size: int = 1) -> str:
    """The class of hardware this process would run on: energy is comparable only within one."""
    from joulebench.harness.provenance import cpu_model, gpu_model

    if device == "cuda":
        return f"cuda:{gpu_model(device)} x{world_size}"
    return f"cpu:{cpu_model()}"


def pinned_class(partition: str | None, constraint: str | None) -> str | None:
    """The class a SLURM campaign pins when the driver cannot see the node it will run on."""
    if not partition and not constraint:
        return None
    parts = [f"partition={partition}" if partition else "", f"constraint={constraint}" if constraint else ""]
    return "slurm:" + ",".join(p for p in parts if p)


def hardware_flag(planned: str, device: str, world_size: int) -> str | None:
    """Why the hardware a run met differs from the class in its key (None when it does not).

    A pinned SLURM class is compared with what the node reports only through the row's
    ``cpu_model``/``gpu_model``; a locally planned class must match exactly.
    """
    actual = hardware_class(device, world_size)
    if planned.startswith("slurm:") or planned == actual:
        return None
    return f"planned for {planned}, ran on {actual}"
