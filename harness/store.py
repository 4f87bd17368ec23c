"""The result store: one Parquet file per run, written atomically, queried through DuckDB views.

Layout under the results directory::

    runs/task=<task>/<run_key>.parquet       one row per run (written last: the "done" marker)
    curves/task=<task>/<run_key>.parquet     one row per evaluation point
    runs/compacted/part-<id>.parquet         merged by ``joulebench compact``

A file is written to a temporary name and renamed, so a reader never sees half a file. A re-run of
the same run_key replaces its file; views keep the newest row per run_key, so a key present both
in a compacted part and in a newer per-run file reads once.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from joulebench.harness.schema import CURVES, RUNS, to_table

TABLES = {"runs": RUNS, "curves": CURVES}
QUERY_ERRORS = (duckdb.BinderException, duckdb.ParserException, duckdb.CatalogException,
                duckdb.ConversionException)


def write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def looks_like_parquet(path: Path) -> bool:
    """A cheap structural check (magic bytes and footer length) that catches truncated files."""
    try:
        size = path.stat().st_size
        if size < 12:
            return False
        with open(path, "rb") as fh:
            if fh.read(4) != b"PAR1":
                return False
            fh.seek(-8, os.SEEK_END)
            tail = fh.read(8)
        footer = int.from_bytes(tail[:4], "little")
        return tail[4:] == b"PAR1" and 0 < footer <= size - 12
    except OSError:
        return False


def sql_list(paths: list[Path]) -> str:
    """A DuckDB list literal of file names (DDL cannot take bound parameters)."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _safe_segment(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in value) or "_"


@dataclass
class Store:
    root: Path
    bad_files: list[tuple[Path, str]] = field(default_factory=list)
    deep_check: bool = False
    """Read every file whole before using it (set after a query met damaged data)."""

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # -- writing ------------------------------------------------------------------------------
    def path_for(self, table: str, task: str, run_key: str, attempt_id: str | None = None) -> Path:
        """One file per attempt: a later attempt never replaces an earlier one's file."""
        name = f"{run_key}.{attempt_id}" if attempt_id else run_key
        return self.root / table / f"task={_safe_segment(task)}" / f"{name}.parquet"

    def write_run(self, row: dict[str, Any], curves: list[dict[str, Any]] | None = None) -> Path:
        task, key, attempt = row["task"], row["run_key"], row.get("attempt_id")
        if curves:
            write_atomic(to_table(curves, CURVES), self.path_for("curves", task, key, attempt))
        path = self.path_for("runs", task, key, attempt)
        write_atomic(to_table([row], RUNS), path)
        return path

    # -- reading ------------------------------------------------------------------------------
    def files(self, table: str) -> list[Path]:
        """Readable files of a table; broken ones are listed in ``bad_files`` and left out."""
        base = self.root / table
        if not base.is_dir():
            return []
        good = []
        for path in sorted(base.rglob("*.parquet")):
            if path.name.startswith("."):
                continue
            if looks_like_parquet(path):
                good.append(path)
            else:
                self._bad(path, "not a complete Parquet file (truncated or overwritten?)")
        return good

    def _bad(self, path: Path, why: str) -> None:
        if all(p != path for p, _ in self.bad_files):
            self.bad_files.append((path, why))

    def stored_keys(self, statuses: Iterable[str] = ("ok",)) -> set[str]:
        """Run keys already stored with one of ``statuses`` (failures are never cached as done)."""
        con = self.connect()
        marks = ",".join("?" for _ in statuses)
        rows = self.execute(f"SELECT run_key FROM runs WHERE status IN ({marks})", list(statuses),
                            con=con).fetchall()
        return {r[0] for r in rows}

    def execute(self, sql: str, params: list | None = None,
                con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
        """Run a query over the views; if a file turns out damaged inside, skip it and retry once."""
        con = con or self.connect()
        try:
            return con.execute(sql, params or [])
        except QUERY_ERRORS:
            raise  # the query itself is wrong: no file is to blame
        except duckdb.Error:
            self.deep_check = True
            return self.connect(con).execute(sql, params or [])

    def connect(self, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with views ``runs``, ``curves`` and ``leaderboard``."""
        con = con or duckdb.connect()
        for name, schema in TABLES.items():
            files = self._verified(name, self.files(name))
            con.execute(f"DROP VIEW IF EXISTS {name}_all")
            if files:
                con.execute(f"CREATE OR REPLACE VIEW {name}_raw AS SELECT * FROM "
                            f"read_parquet({sql_list(files)}, union_by_name=true, hive_partitioning=false)")
                have = {r[0] for r in con.execute(f"DESCRIBE {name}_raw").fetchall()}
                missing = [f"NULL::{duck_type(f.type)} AS {f.name}" for f in schema if f.name not in have]
                con.execute(f"CREATE VIEW {name}_all AS SELECT *{''.join(', ' + m for m in missing)} "
                            f"FROM {name}_raw")
            else:
                con.register(f"_{name}_empty", schema.empty_table())
                con.execute(f"CREATE VIEW {name}_all AS SELECT * FROM _{name}_empty")
        con.execute(ATTEMPTS_VIEW)
        con.execute("""CREATE OR REPLACE VIEW runs AS SELECT * FROM attempts
                       QUALIFY row_number() OVER (PARTITION BY run_key
                                                  ORDER BY status = 'ok' DESC, started_at DESC) = 1""")
        con.execute("""CREATE OR REPLACE VIEW curves AS SELECT c.* FROM curves_all c
                       JOIN runs r ON c.run_key = r.run_key AND c.run_started_at = r.started_at""")
        con.execute(LEADERBOARD_VIEW)
        return con

    def _verified(self, table: str, files: list[Path]) -> list[Path]:
        """Let DuckDB read every footer once; on failure find the broken files and leave them out."""
        if not files:
            return files
        try:
            if self.deep_check:
                raise duckdb.Error("deep check requested")
            duckdb.connect().execute("SELECT count(*) FROM read_parquet(?, union_by_name=true, hive_partitioning=false)",
                                     [[str(f) for f in files]]).fetchone()
            return files
        except duckdb.Error:
            pass
        good = []
        for path in files:
            try:
                pq.read_table(path)
                good.append(path)
            except Exception as exc:  # pyarrow raises several types for damaged files
                self._bad(path, f"unreadable: {str(exc).splitlines()[0]}")
        return good

    # -- compaction ---------------------------------------------------------------------------
    def compact(self) -> dict[str, int]:
        """Merge every readable file of each table into one part; returns rows per table.

        The merged part is written (atomically) before any source file is removed, so a crash in
        between leaves duplicates that the views and the next compaction resolve, never a loss.
        """
        counts = {}
        for name in TABLES:
            files = self._verified(name, self.files(name))
            if not files:
                counts[name] = 0
                continue
            # every attempt is kept (one row each); a curve point once per attempt and step
            keys = "run_key, attempt_id" if name == "runs" else "run_key, attempt_id, run_started_at, step, split"
            order = "finished_at" if name == "runs" else "run_started_at"
            con = duckdb.connect()
            con.execute(f"CREATE VIEW src AS SELECT * FROM read_parquet({sql_list(files)}, "
                        "union_by_name=true, hive_partitioning=false)")
            have = {r[0] for r in con.execute("DESCRIBE src").fetchall()}
            fill = "".join(f", NULL::VARCHAR AS {c}" for c in ("attempt_id",) if c not in have)
            part = con.sql(f"SELECT *{fill} FROM src QUALIFY row_number() OVER "
                           f"(PARTITION BY {keys} ORDER BY {order} DESC) = 1").to_arrow_table()
            write_atomic(part, self.root / name / "compacted" / f"part-{uuid.uuid4().hex[:12]}.parquet")
            for path in files:
                path.unlink(missing_ok=True)
            counts[name] = part.num_rows
        return counts


def duck_type(typ: pa.DataType) -> str:
    """DuckDB's name for an Arrow type of the schema (for NULL columns of older files)."""
    if pa.types.is_timestamp(typ):
        return "TIMESTAMPTZ"
    return {pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float64(): "DOUBLE",
            pa.bool_(): "BOOLEAN"}.get(typ, "VARCHAR")


ATTEMPTS_VIEW = """
CREATE OR REPLACE VIEW attempts AS
SELECT * REPLACE (coalesce(key_scheme, 'v1') AS key_scheme,
                  coalesce(cell_key, 'v1:' || md5(concat_ws('|', task, preset, method, model,
                                                            method_params, task_params))) AS cell_key),
       count(*) OVER (PARTITION BY run_key) AS attempts,
       count(*) FILTER (WHERE status <> 'ok') OVER (PARTITION BY run_key) AS failed_attempts
FROM runs_all
"""

LEADERBOARD_VIEW = """
CREATE OR REPLACE VIEW leaderboard AS
SELECT cell_key, any_value(task) AS task, any_value(preset) AS preset, any_value(method) AS method,
       any_value(model) AS model, any_value(method_params) AS method_params,
       any_value(task_params) AS task_params,
       any_value(budget_steps) AS budget_steps, any_value(budget_epochs) AS budget_epochs,
       any_value(budget_seconds) AS budget_seconds, any_value(hardware_class) AS hardware_class,
       any_value(key_scheme) AS key_scheme, any_value(world_size) AS world_size,
       sum(failed_attempts) AS failed_attempts,
       any_value(primary_metric) AS primary_metric,
       any_value(higher_is_better) AS higher_is_better,
       count(*) AS seeds,
       median(primary_value) AS primary_median,
       quantile_cont(primary_value, 0.25) AS primary_q25,
       quantile_cont(primary_value, 0.75) AS primary_q75,
       median(train_energy_j) AS train_energy_j,
       string_agg(DISTINCT energy_source, ' | ') AS energy_source,
       bool_or(energy_estimated) AS energy_estimated,
       median(train_s) AS train_s,
       median(co2_g) AS co2_g,
       median(device_hours) AS device_hours,
       median(train_energy_j / nullif(samples, 0)) AS joules_per_sample,
       median(time_to_target_s) AS time_to_target_s,
       median(energy_to_target_j) AS energy_to_target_j
FROM runs WHERE status = 'ok' AND parent_key IS NULL
GROUP BY cell_key
"""
