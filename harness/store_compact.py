"""Incremental compaction: loose attempt files → new immutable parts; nothing else is rewritten.

One compaction at a time holds ``.locks/compact.lock`` (see ``store_lock``). For each batch it
records every source file's identity (size, mtime, inode) *before* reading it, streams the batch
into a new part with DuckDB under a memory limit, checks the part against the schema, renames it
into ``compacted/`` and writes ``part-*.sources.json`` beside it: from then on readers skip those
sources by name. A later compaction, ``grace_s`` after (default 10 min: longer than any read),
removes each source - only a source still identical to what was merged: it is renamed aside
first and compared, so a file rewritten meanwhile (a perun import) is put back, never lost.
(Deleting at once made reads under a compaction loop fail: each retry met newly vanished files.)
A compaction killed before its record leaves sources the next one merges again; the views read
each attempt (and curve point) once.

Tiers: parts under ``small_part_bytes`` are merged, when at least ``min_small_parts`` of them
exist, into larger parts of at most ``tier_bytes`` of input, by the same rule (the small parts are
sources like loose files: identities recorded, skipped by readers once the record exists, removed
after the grace period only while identical). A merge of parts keeps each distinct row once, so
rows duplicated by a killed compaction go away there instead of growing with every tier. Parts
merged now are not merged again in the same compaction: each tier waits for the next run.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import duckdb

from joulebench.harness import SCHEMA_VERSION, __version__
from joulebench.harness.params import SpecError
from joulebench.harness.store_files import (
    PARTS_DIR,
    SOURCES_SUFFIX,
    Identity,
    fsync_file,
    identity,
    sources_records,
    sql_list,
)
from joulebench.harness.store_guard import check_file, quarantine
from joulebench.harness.store_lock import LockFile

TABLE_NAMES = ("runs", "curves")


class CompactionBusy(SpecError):
    """Another compaction holds the lock."""


def compact(store, files_per_part: int, memory_limit: str, grace_s: float,
            tiers: Tiers | None = None) -> dict[str, int]:
    """Rows of loose files merged per table by this compaction (``store`` is a
    ``harness.store.Store``); small parts are merged too (``Tiers``)."""
    tiers = tiers or Tiers()
    lock = LockFile(store.root / ".locks" / "compact.lock", stale_s=600.0, heartbeat_s=10.0)
    if not lock.acquire():
        holder = lock.holder() or {}
        since = holder.get("since")
        age = f", for {time.time() - since:.0f} s" if isinstance(since, (int, float)) else ""
        raise CompactionBusy(f"another compaction is running ({holder.get('owner', 'unknown owner')}{age}); "
                             "nothing done")
    with lock:
        counts = {}
        for name in TABLE_NAMES:
            remove_dead_temporaries(store.root / name / PARTS_DIR)
            expire_sources(store.root, name, grace_s)
            merge_small_parts(store, name, tiers, memory_limit)
            counts[name] = _compact_table(store, name, files_per_part, memory_limit, grace_s)
        return counts


def remove_dead_temporaries(parts: Path) -> None:
    """Half-written parts of a compaction that died (only a compaction writes them, and this one
    holds the lock): copies of sources that are all still in place, so nothing is lost."""
    try:
        with os.scandir(parts) as entries:
            dead = [e.path for e in entries if e.name.startswith(".part-") and e.name.endswith(".tmp")]
    except FileNotFoundError:
        return
    except OSError as exc:  # e.g. a file where the parts folder belongs
        raise SpecError(f"cannot write parts in {parts}: {exc.strerror or exc}; nothing removed") from None
    for path in dead:
        Path(path).unlink(missing_ok=True)


class Tiers(NamedTuple):
    """When small parts are merged into larger ones (see the module docstring)."""

    small_part_bytes: int = 16 << 20
    min_small_parts: int = 4
    tier_bytes: int = 64 << 20
    """Input bytes per merged part: bounds its memory with the DuckDB limit (zstd parts inflate
    about 8x in memory at worst; 1 M rows of 100 loose files peaked at 828 MB)."""


def merge_small_parts(store, name: str, tiers: Tiers, memory_limit: str) -> int:
    """Merge unsuperseded parts under ``tiers.small_part_bytes``; the number of parts written."""
    small = []
    for part in store.parts(name):
        ident = identity(part)
        if ident is not None and ident.size < tiers.small_part_bytes:
            small.append((part, ident.size))
    if len(small) < tiers.min_small_parts:
        return 0
    batches: list[list[Path]] = [[]]
    total = 0
    for part, size in small:
        if batches[-1] and total + size > tiers.tier_bytes:
            batches.append([])
            total = 0
        batches[-1].append(part)
        total += size
    written = 0
    for batch in batches:
        if len(batch) > 1:
            _merge_batch(store.root, name, batch, memory_limit, distinct=True)
            written += 1
    return written


def _compact_table(store, name: str, files_per_part: int, memory_limit: str, grace_s: float) -> int:
    loose = store.loose(name)
    merged = 0
    for start in range(0, len(loose), files_per_part):
        batch = [p for p in loose[start:start + files_per_part] if p.exists()]
        if batch:
            merged += _merge_batch(store.root, name, batch, memory_limit)
    if grace_s <= 0:
        expire_sources(store.root, name, 0.0)
    return merged


def expire_sources(root: Path, name: str, grace_s: float) -> None:
    """Remove the sources of parts written more than ``grace_s`` ago (still-identical ones only),
    then their record. Until then readers skip them by name (``store_files.superseded``), so a
    read that began before the part appeared never meets a vanished file."""
    for record in sources_records(root / name):
        try:
            info = json.loads(record.read_text())
        except FileNotFoundError:
            continue
        except ValueError:
            info = {"written": 0.0, "sources": []}
        if time.time() - float(info.get("written", 0.0)) < grace_s:
            continue
        for rel, size, mtime_ns, inode in info["sources"]:
            remove_if_identical(root, root / rel, Identity(size, mtime_ns, inode))
        record.unlink(missing_ok=True)


def _merge_batch(root: Path, name: str, batch: list[Path], memory_limit: str, distinct: bool = False) -> int:
    seen = {p: identity(p) for p in batch}
    batch = [p for p in batch if seen[p] is not None]
    parts = root / name / PARTS_DIR
    part = parts / f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = part.with_name(f".{part.name}.tmp")
    con = duckdb.connect(config={"memory_limit": memory_limit, "preserve_insertion_order": False})
    meta = f"KV_METADATA {{'joulebench.schema_version': '{SCHEMA_VERSION}', 'joulebench.version': '{__version__}'}}"
    try:
        parts.mkdir(parents=True, exist_ok=True)
        rows = con.execute(f"COPY (SELECT {'DISTINCT ' if distinct else ''}* FROM read_parquet({sql_list(batch)}, union_by_name=true, "
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
    record = {"part": part.name, "written": time.time(),
              "sources": [[str(p.relative_to(root)), *seen[p]] for p in batch]}
    write_text_atomic(part.with_name(part.stem + SOURCES_SUFFIX), json.dumps(record))
    return int(rows)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    fsync_file(tmp)
    os.rename(tmp, path)


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
