"""The schema guard: a file is used only if its columns have the types of its schema version.

One file whose ``primary_value`` is text used to break every reader (DuckDB cannot union the
types) and compaction made that permanent. Each file is checked by its footer, against the
version it declares: files that do not conform are moved aside into ``<results>/quarantine``
with a reason file, never merged; a file of a future schema version is left in place for the
newer joulebench that wrote it, and skipped with a message naming that version.
"""

from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from joulebench.harness import SCHEMA_VERSION, __version__
from joulebench.harness.schema import PREFIXES, SCHEMAS

VERSION_KEY = b"joulebench.schema_version"
WRITER_KEY = b"joulebench.version"
DYNAMIC_TYPES = (pa.float64(), pa.string(), pa.bool_(), pa.int64(), pa.null())
"""Types a prefixed column may have (the writer uses the first three; int64/null for old files)."""


class FutureSchema(Exception):
    """A file written by a newer joulebench: not ours to judge, not ours to move."""


def tag(table: pa.Table) -> pa.Table:
    """Record the schema version and writer in the file's metadata (checked without reading rows)."""
    meta = dict(table.schema.metadata or {})
    meta.update({VERSION_KEY: str(SCHEMA_VERSION).encode(), WRITER_KEY: __version__.encode()})
    return table.replace_schema_metadata(meta)


def file_version(pf: pq.ParquetFile, schema: pa.Schema) -> tuple[int, str | None]:
    """(schema version, joulebench version that wrote it); files before the tag read their column."""
    meta = schema.metadata or {}
    if VERSION_KEY in meta:
        writer = meta.get(WRITER_KEY)
        return int(meta[VERSION_KEY]), writer.decode() if writer else None
    names = schema.names
    if "schema_version" not in names or pf.metadata.num_rows == 0:
        return 1, None
    cols = ["schema_version"] + (["harness_version"] if "harness_version" in names else [])
    head = pf.read_row_group(0, columns=cols).slice(0, 1).to_pylist()[0]
    try:
        version = int(head["schema_version"]) if head["schema_version"] is not None else 1
    except (TypeError, ValueError):
        version = -1  # a schema_version that is not a number: the type check below says so
    return version, head.get("harness_version")


@functools.cache
def _known_types(table: str) -> dict[str, pa.DataType]:
    known: dict[str, pa.DataType] = {}
    for schemas in SCHEMAS.values():
        known.update({f.name: f.type for f in schemas[table]})
    return known


@functools.cache
def _expected_types(version: int, table: str) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in SCHEMAS[max(1, version)][table]}


def violation(schema: pa.Schema, version: int, table: str) -> str | None:
    """Why a file of ``version`` does not conform, or None. Columns may be missing (older files)."""
    if version < 0:
        return "column schema_version is not an integer"
    expected, known = _expected_types(version, table), _known_types(table)
    for f in schema:
        want = expected.get(f.name, known.get(f.name))
        if want is not None:
            if f.type != want and f.type != pa.null():
                return f"column {f.name} is {f.type}, schema v{version} says {want}"
        elif f.name.startswith(PREFIXES):
            if f.type not in DYNAMIC_TYPES:
                return f"column {f.name} is {f.type} (prefixed columns are double, string or bool)"
        else:
            return f"column {f.name} is not in schema v{version}"
    return None


def check_file(path: Path, table: str) -> str | None:
    """None if the file may be read; else why not. Raises FutureSchema for a newer version."""
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        version, writer = file_version(pf, schema)
    except FileNotFoundError:
        raise
    except Exception as exc:  # pyarrow raises several types for damaged footers
        return f"unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if version > SCHEMA_VERSION:
        by = f"joulebench {writer}" if writer else "a newer joulebench"
        raise FutureSchema(f"{path} has schema v{version} (written by {by}); this joulebench "
                           f"{__version__} reads up to v{SCHEMA_VERSION}: upgrade to {by} or newer")
    return violation(schema, version, table)


def quarantine(root: Path, path: Path, reason: str) -> Path | None:
    """Move a non-conforming file aside with a reason file; None if another process moved it first."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    dest_dir = root / "quarantine" / rel.parent
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{path.stem}.{uuid.uuid4().hex[:6]}{path.suffix}"
    try:
        os.rename(path, dest)
    except FileNotFoundError:
        return None
    dest.with_name(dest.name + ".reason.txt").write_text(reason + "\n")
    return dest
