"""The result store: one immutable Parquet file per attempt, merged into parts, read through DuckDB.

Layout under the results directory::

    runs/task=<task>/<run_key>.<attempt_id>.<status>.parquet   one row per attempt (written last)
    curves/task=<task>/<run_key>.<attempt_id>.<status>.parquet one row per evaluation point
    <table>/compacted/part-<id>.parquet                        merged by ``joulebench compact``
    claims/<run_key>.claim, .locks/compact.lock                lock files (``store_lock``)
    quarantine/...                                             files that broke the schema, with reasons

The one rule: no operation deletes or replaces a file whose exact content it did not read and
supersede. Writers never replace a file (each attempt has its own name); compaction deletes only
sources still identical to what it merged, a grace period after the part that holds them
(``store_compact``). Readers list loose files, then the parts' source records (skipping what they
name), then the parts; a part and its record exist before any source goes, so no reader sees a
store with results missing, and one that meets a vanished file lists again.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from joulebench.harness.params import SpecError
from joulebench.harness.schema import CURVES, PREFIXES, RUNS, SCHEMAS, to_table
from joulebench.harness.store_files import (
    Identity,
    attempt_name,
    identity,
    keys_by_name,
    looks_like_parquet,
    loose_files,
    part_files,
    safe_segment,
    sql_list,
    superseded,
    write_atomic,
)
from joulebench.harness.store_guard import FutureSchema, check_file, quarantine, tag, violation
from joulebench.harness.store_lock import LockFile
from joulebench.harness.store_views import LEADERBOARD_VIEW, VIEWS

if TYPE_CHECKING:
    from joulebench.harness.store_compact import Tiers

__all__ = ["Store", "StoreError", "write_atomic", "sql_list", "looks_like_parquet", "LEADERBOARD_VIEW"]

TABLES = {"runs": RUNS, "curves": CURVES}
QUERY_ERRORS = (duckdb.BinderException, duckdb.ParserException, duckdb.CatalogException,
                duckdb.ConversionException)
CHECK_CHUNK = 2_000
"""Footers whose schemas are checked in one DuckDB pass."""
READ_TRIES = 6
"""Listings retried when files vanish under a query (each compaction moves files once)."""


DYNAMIC_DUCK_TYPES = ("DOUBLE", "VARCHAR", "BOOLEAN", "BIGINT")


@functools.cache
def _duck_types(table: str) -> dict[str, str]:
    """DuckDB's names of the types of every column any schema version gives ``table``."""
    con, out = duckdb.connect(), {}
    for version in sorted(SCHEMAS):
        con.register("_empty", SCHEMAS[version][table].empty_table())
        out.update({r[0]: r[1] for r in con.execute("DESCRIBE _empty").fetchall()})
    return out


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("-inf")  # merged into a larger part since listed: that part is newer


class StoreError(SpecError):
    """A row that cannot be stored, or a store that cannot be written (full disk); one line."""


Claim = LockFile
"""A claim on one run_key (see ``Store.claim``)."""


@dataclass
class Store:
    root: Path
    before_write: Callable[[], None] | None = None
    """Called before every write (a worker checks that its driver is still alive)."""
    bad_files: list[tuple[Path, str]] = field(default_factory=list)
    deep_check: bool = False
    """Read every file whole before using it (set after a query met damaged data)."""
    _checked: dict[Path, tuple[Identity, str | None]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # -- writing ------------------------------------------------------------------------------
    def attempt_path(self, table: str, task: str, run_key: str, attempt_id: str, status: str) -> Path:
        return self.root / table / f"task={safe_segment(task)}" / attempt_name(run_key, attempt_id, status)

    def loose_attempts(self, task: str, run_key: str) -> list[Path]:
        """The key's attempt files not yet merged into a part."""
        folder = self.root / "runs" / f"task={safe_segment(task)}"
        return sorted(folder.glob(f"{safe_segment(run_key)}.*.parquet"))

    def write_run(self, row: dict[str, Any], curves: list[dict[str, Any]] | None = None) -> Path:
        """Store one attempt (a new file; nothing is replaced). Fills ``attempt_id`` when unset."""
        if self.before_write:
            self.before_write()
        attempt = row.get("attempt_id") or uuid.uuid4().hex
        row = {**row, "attempt_id": attempt}
        task, key, status = row["task"], row["run_key"], row.get("status") or "failed"
        run_table = self._table([row], RUNS, "runs", key)
        if curves:
            points = self._table([{**c, "attempt_id": attempt} for c in curves], CURVES, "curves", key)
            self._write(points, self.attempt_path("curves", task, key, attempt, status))
        path = self.attempt_path("runs", task, key, attempt, status)
        self._write(run_table, path)
        return path

    def _table(self, rows: list[dict[str, Any]], schema: pa.Schema, name: str, key: str) -> pa.Table:
        try:
            table = to_table(rows, schema)
        except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise StoreError(f"run {key} cannot be stored: {str(exc).splitlines()[0]}") from None
        why = violation(table.schema, 2, name)
        if why:
            raise StoreError(f"run {key} cannot be stored: {why}")
        return tag(table)

    def _write(self, table: pa.Table, path: Path) -> None:
        try:
            write_atomic(table, path)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None

    # -- claims -------------------------------------------------------------------------------
    def claim(self, run_key: str, owner: str | None = None, stale_s: float = 600.0,
              heartbeat_s: float = 30.0) -> Claim | None:
        """Claim a run before starting it; None when another driver holds a live claim.

        Drivers (``cluster.local``; SLURM array tasks in ``cluster.array``) call::

            claim = store.claim(spec.run_key, owner)
            if claim is None or spec.run_key in store.stored_keys():
                skip                     # someone else runs it, or ran it meanwhile
            with claim:                  # heartbeat every heartbeat_s; released on exit
                run it

        A claim whose owner died (same host) or stopped beating for ``stale_s`` is taken over.
        """
        lock = LockFile(self.root / "claims" / f"{safe_segment(run_key)}.claim", owner, stale_s, heartbeat_s)
        return lock if lock.acquire() else None

    # -- listing and checking -----------------------------------------------------------------
    def files(self, table: str) -> list[Path]:
        """Readable, conforming files of a table, loose ones listed before parts (see the module
        docstring); broken ones are listed in ``bad_files``, non-conforming ones quarantined."""
        loose, parts = self._listing(table)
        return self._conforming(loose + parts, table)

    def _conforming(self, listed: list[Path], table: str) -> list[Path]:
        """The usable files of ``listed``, footers checked ``CHECK_CHUNK`` at a time (one DuckDB
        pass over 100 k footers held 15 GB), file by file only in a chunk that does not conform."""
        out: list[Path] = []
        for start in range(0, len(listed), CHECK_CHUNK):
            chunk = listed[start:start + CHECK_CHUNK]
            if not self.deep_check and self._conform_together(chunk, table):
                out += chunk
            else:
                out += [p for p in chunk if self._usable(p, table)]
        return out

    def _listing(self, table: str) -> tuple[list[Path], list[Path]]:
        """Loose files and parts not yet merged into another part. Loose files are listed first,
        then the records of what parts hold (``superseded``), then parts: a part exists before its
        record, and its sources go before its record, so nothing is missed in between."""
        loose = loose_files(self.root / table)
        done = superseded(self.root, self.root / table)
        parts = part_files(self.root / table)
        if not done:
            return loose, parts
        return [p for p in loose if str(p) not in done], [p for p in parts if str(p) not in done]

    def _live_parts(self, table: str) -> list[Path]:
        """Parts not merged into a larger one (records read before parts are listed)."""
        done = superseded(self.root, self.root / table)
        return [p for p in part_files(self.root / table) if str(p) not in done]

    def _conform_together(self, files: list[Path], table: str) -> bool:
        """One DuckDB pass over all footers (5x faster than one file at a time): if the union has
        exactly the schema's types, every file does (a wrong-typed file widens its column, a file
        of another version brings unknown columns); otherwise each file is checked alone."""
        try:
            got = duckdb.connect().execute(f"DESCRIBE SELECT * FROM read_parquet({sql_list(files)}, "
                                           "union_by_name=true, hive_partitioning=false)").fetchall()
        except duckdb.Error:
            return False  # damaged or vanished files: the file-by-file path finds them
        want = _duck_types(table)
        return all(want.get(name) == typ if name in want else
                   name.startswith(PREFIXES) and typ in DYNAMIC_DUCK_TYPES for name, typ, *_ in got)

    def loose(self, table: str) -> list[Path]:
        """Conforming loose (not yet merged) files of a table."""
        return self._conforming(self._listing(table)[0], table)

    def parts(self, table: str) -> list[Path]:
        """Conforming parts of a table not yet merged into a larger part."""
        return [p for p in self._live_parts(table) if self._usable(p, table)]

    def _usable(self, path: Path, table: str) -> bool:
        ident = identity(path)
        if ident is None:
            return False  # gone since listed: merged into a part listed after it
        cached = self._checked.get(path)
        if cached and cached[0] == ident:
            return cached[1] is None
        why: str | None
        if not looks_like_parquet(path):
            why = "not a complete Parquet file (truncated or overwritten?)"
        else:
            try:
                why = check_file(path, table)
            except FileNotFoundError:
                return False
            except FutureSchema as exc:
                why = str(exc)
            else:
                if why and not why.startswith("unreadable"):
                    moved = quarantine(self.root, path, why)
                    why = f"quarantined to {moved}: {why}" if moved else None
                    if moved is None:
                        return False
        self._checked[path] = (ident, why)
        if why:
            self._bad(path, why)
        return why is None

    def _bad(self, path: Path, why: str) -> None:
        if all(p != path for p, _ in self.bad_files):
            self.bad_files.append((path, why))

    def _deep_verified(self, files: list[Path]) -> list[Path]:
        """The slow path after a query met damaged data: read each file whole."""
        good = []
        for path in files:
            try:
                pq.read_table(path)
                good.append(path)
            except FileNotFoundError:
                continue
            except Exception as exc:  # pyarrow raises several types for damaged files
                self._checked[path] = (identity(path) or Identity(0, 0, 0), "damaged")
                self._bad(path, f"unreadable: {str(exc).splitlines()[0]}")
        return good

    # -- reading ------------------------------------------------------------------------------
    def stored_keys(self, statuses: Iterable[str] = ("ok",)) -> set[str]:
        """Run keys with an attempt of one of ``statuses`` (failures are never cached as done).

        Loose files answer by their names (no file opened); parts by two columns."""
        wanted = set(statuses)
        keys, names = keys_by_name(self.root / "runs", wanted)
        legacy = [Path(p) for p in names]
        for _ in range(READ_TRIES):
            files = [p for p in legacy if self._usable(p, "runs")] + self.parts("runs")
            if not files:
                return keys
            marks = ",".join("?" for _ in wanted)
            try:
                rows = duckdb.connect().execute(
                    f"SELECT DISTINCT run_key FROM read_parquet({sql_list(files)}, union_by_name=true, "
                    f"hive_partitioning=false) WHERE status IN ({marks})", list(wanted)).fetchall()
                return keys | {r[0] for r in rows}
            except duckdb.IOException:
                legacy = [p for p in legacy if p.exists()]  # a legacy file merged: its part is listed next
        raise StoreError(f"the store at {self.root} kept changing under {READ_TRIES} reads; try again")

    def has_ok(self, task: str, run_key: str, parts_since: float | None = None) -> bool:
        """Whether the key has an ok attempt in a loose file, or in a part written after
        ``parts_since`` (a driver re-checks this cheaply before each run; see ``claim``)."""
        folder = self.root / "runs" / f"task={safe_segment(task)}"
        if any(folder.glob(f"{safe_segment(run_key)}.*.ok.parquet")):
            return True
        for _ in range(READ_TRIES):
            parts = [p for p in self.parts("runs") if parts_since is None or _mtime(p) >= parts_since]
            if not parts:
                return False
            try:
                hit = duckdb.connect().execute(
                    f"SELECT count(*) FROM read_parquet({sql_list(parts)}, union_by_name=true, "
                    "hive_partitioning=false) WHERE run_key = ? AND status = 'ok'", [run_key]).fetchone()[0]
                return hit > 0
            except duckdb.IOException:
                continue  # a small part merged into a larger one meanwhile: list again
        raise StoreError(f"the store at {self.root} kept changing under {READ_TRIES} reads; try again")

    def execute(self, sql: str, params: list | None = None,
                con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
        """Run a query over the views; files vanishing (compaction) or damaged inside are met by
        listing again (and skipping damaged files), never by an error or an empty answer."""
        con = con or self.connect()
        for attempt in range(READ_TRIES):
            try:
                return con.execute(sql, params or [])
            except QUERY_ERRORS:
                raise  # the query itself is wrong: no file is to blame
            except duckdb.Error as exc:
                if attempt == READ_TRIES - 1:
                    raise StoreError(f"query failed after {READ_TRIES} reads: {str(exc).splitlines()[0]}") \
                        from None
                if not isinstance(exc, duckdb.IOException):
                    self.deep_check = True
                con = self.connect(con)
        raise AssertionError("unreachable")

    def connect(self, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with views ``attempts``, ``runs``, ``curves`` and ``leaderboard``."""
        con = con or duckdb.connect()
        for attempt in range(READ_TRIES):
            try:
                return self._views(con)
            except duckdb.IOException:
                if attempt == READ_TRIES - 1:
                    raise StoreError(f"the store at {self.root} kept changing under {READ_TRIES} reads; "
                                     "try again") from None
        raise AssertionError("unreachable")

    def _views(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        for name, schema in TABLES.items():
            files = self.files(name)
            if self.deep_check:
                files = self._deep_verified(files)
            con.register(f"_{name}_empty", schema.empty_table())
            source = f"SELECT * FROM _{name}_empty"
            if files:
                source = (f"SELECT * FROM read_parquet({sql_list(files)}, union_by_name=true, "
                          f"hive_partitioning=false) UNION ALL BY NAME {source}")
            con.execute(f"CREATE OR REPLACE VIEW {name}_all AS {source}")
        for view in VIEWS:
            con.execute(view)
        return con

    # -- compaction ---------------------------------------------------------------------------
    def compact(self, files_per_part: int = 2_000, memory_limit: str = "1GB",
                grace_s: float = 600.0, tiers: Tiers | None = None) -> dict[str, int]:
        """Merge loose files into new parts and small parts into larger ones (never rewriting a
        part); rows of loose files merged per table.

        See ``store_compact`` for the lock, the identity rule and the tiers."""
        from joulebench.harness.store_compact import compact

        return compact(self, files_per_part, memory_limit, grace_s, tiers)

