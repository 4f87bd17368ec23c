"""Incremental compaction: loose attempt files → new immutable parts; nothing else is rewritten.

One compaction at a time holds ``.locks/compact.lock`` (see ``store_lock``). For each batch it
records every source file's identity (size, mtime, inode) *before* reading it, streams the batch
into a new part with DuckDB under a memory limit, checks the part against the schema, renames it
into ``compacted/``, and only then removes each source - and only a source still identical to
what it read: the source is renamed aside first and compared, so a file rewritten meanwhile (a
perun import) is put back, never lost. A compaction killed after writing its part leaves sources
that the next one merges again; the views read each attempt (and curve point) once.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import duckdb

from joulebench.harness import SCHEMA_VERSION, __version__
from joulebench.harness.params import SpecError
from joulebench.harness.store_files import PARTS_DIR, Identity, fsync_file, identity, sql_list
from joulebench.harness.store_guard import check_file, quarantine
from joulebench.harness.store_lock import LockFile

TABLE_NAMES = ("runs", "curves")


class CompactionBusy(SpecError):
    """Another compaction holds the lock."""


def compact(store, files_per_part: int, memory_limit: str) -> dict[str, int]:
    """Rows merged per table by this compaction (``store`` is a ``harness.store.Store``)."""
    lock = LockFile(store.root / ".locks" / "compact.lock", stale_s=600.0, heartbeat_s=10.0)
    if not lock.acquire():
        holder = lock.holder() or {}
        since = holder.get("since")
        age = f", for {time.time() - since:.0f} s" if isinstance(since, (int, float)) else ""
        raise CompactionBusy(f"another compaction is running ({holder.get('owner', 'unknown owner')}{age}); "
                             "nothing done")
    with lock:
        return {name: _compact_table(store, name, files_per_part, memory_limit) for name in TABLE_NAMES}


def _compact_table(store, name: str, files_per_part: int, memory_limit: str) -> int:
    loose = store.loose(name)
    merged = 0
    for start in range(0, len(loose), files_per_part):
        batch = [p for p in loose[start:start + files_per_part] if p.exists()]
        if batch:
            merged += _merge_batch(store.root, name, batch, memory_limit)
    return merged


def _merge_batch(root: Path, name: str, batch: list[Path], memory_limit: str) -> int:
    seen = {p: identity(p) for p in batch}
    batch = [p for p in batch if seen[p] is not None]
    parts = root / name / PARTS_DIR
    part = parts / f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = part.with_name(f".{part.name}.tmp")
    con = duckdb.connect(config={"memory_limit": memory_limit, "preserve_insertion_order": False})
    meta = f"KV_METADATA {{'joulebench.schema_version': '{SCHEMA_VERSION}', 'joulebench.version': '{__version__}'}}"
    try:
        parts.mkdir(parents=True, exist_ok=True)
        rows = con.execute(f"COPY (SELECT * FROM read_parquet({sql_list(batch)}, union_by_name=true, "
                           f"hive_partitioning=false)) TO '{_quote(tmp)}' "
                           f"(FORMAT parquet, COMPRESSION zstd, {meta})").fetchone()[0]
        fsync_file(tmp)
        why = check_file(tmp, name)
        if why:
            raise SpecError(f"compaction of {name} produced a part that breaks the schema ({why}); nothing removed")
        os.rename(tmp, part)
    except duckdb.IOException as exc:  # full disk, or a source moved aside meanwhile
        why = "no space left on the device" if "space" in str(exc).lower() else str(exc).splitlines()[0]
        raise SpecError(f"cannot write {part}: {why}; nothing removed, try again") from None
    except OSError as exc:
        raise SpecError(f"cannot write {part}: {exc.strerror or exc}; nothing removed") from None
    finally:
        con.close()
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    for path in batch:
        remove_if_identical(root, path, seen[path])
    return int(rows)


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def remove_if_identical(root: Path, path: Path, seen: Identity) -> bool:
    """Remove ``path`` only if it is still the file that was merged; True if removed."""
    aside = path.with_name(f".{path.name}.merged-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)  # from here on no writer can change what is compared
    except FileNotFoundError:
        return False
    if identity(aside) == seen:
        aside.unlink()
        return True
    try:
        os.link(aside, path)
        aside.unlink()
    except FileExistsError:  # a new file took the name meanwhile: keep both, nothing is lost
        quarantine(root, aside, f"changed while being compacted; {path.name} was written again meanwhile")
    return False
