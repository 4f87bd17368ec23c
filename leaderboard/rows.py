"""The leaderboard's own copy of the stored attempts, read file by file and kept up to date by
reading only what is new.

The copy remembers, for every file of the store's public listing (``Store.files``), the file's
identity (path, size, mtime) and holds its rows, only the columns the pages ask for (no spec, no
traceback: a run's detail is read from the store). A sync reads only the files it has not read
(or that changed) and drops the rows of files that vanished. A compaction replaces loose files
by a part holding the same attempts: the rows of both may be held for a moment, and the store's
own ``attempts`` and ``runs`` views, run verbatim over the copy, keep each (run_key, attempt_id)
once. ``board_runs`` materialises those views (one row per run key) and is updated per run key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb

from joulebench.harness.schema import RUNS
from joulebench.harness.store import Store, sql_list
from joulebench.harness.store_files import identity
from joulebench.harness.store_views import ATTEMPTS_VIEW, CELL, ESTIMATED, RUNS_VIEW

COLUMNS = (
    "run_key", "attempt_id", "status", "started_at", "finished_at", "cell_key", "lineage_key", "key_scheme",
    "code_hash", "hardware_class", "task", "preset", "method", "model", "method_params", "task_params", "seed",
    "campaign", "parent_key", "budget_steps", "budget_epochs", "budget_seconds", "primary_metric",
    "primary_value", "higher_is_better", "target", "reached_target", "time_to_target_s", "energy_to_target_j",
    "train_energy_j", "total_energy_j", "energy_source", "energy_estimated", "train_s", "wall_s", "co2_g",
    "device_hours", "samples", "gradient_updates", "world_size", "nodes", "local_batch", "global_batch",
    "gpu_model", "cpu_model", "device")
"""What the pages ask of a run (the store's rows have some 90 columns, most of them provenance)."""

Listing = dict[str, tuple[int, int]]
"""Path -> (size, mtime in ns): a file's identity as the leaderboard keys what it read."""

BOARD_RUNS = f"""
SELECT *, coalesce(nullif(gpu_model, ''), nullif(cpu_model, ''), device) AS hardware,
       {ESTIMATED} AS estimated, {CELL} AS cell
FROM runs"""
"""One row per run key (the store's ``runs``) and what the pages derive from it: ``hardware``
(the GPU if any, else the CPU), ``estimated`` (a row that does not say counts as estimated)."""


def listing(store: Store) -> Listing:
    """The store's run files as they are now (vanished between listing and stat: left out)."""
    out: Listing = {}
    for path in store.files("runs"):
        ident = identity(path)
        if ident is not None:
            out[str(path)] = (ident.size, ident.mtime_ns)
    return out


def digest(files: Listing, version: str) -> str:
    """Names a state of the store: a new, rewritten or vanished file changes it."""
    h = hashlib.sha256(version.encode())
    for path, (size, mtime) in sorted(files.items()):
        h.update(f"{path}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()[:24]


class RunCopy:
    """The rows of the files read so far (``run_copy``) and the runs they make (``board_runs``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.files: Listing = {}
        self.files_read = 0
        """Files read by the last sync (what a refresh costs)."""
        con.register("_runs_schema", RUNS.empty_table())
        wanted = ", ".join(COLUMNS)
        con.execute(f"CREATE OR REPLACE TEMP TABLE run_copy AS SELECT {wanted}, ''::VARCHAR AS _file "
                    "FROM _runs_schema WHERE false")
        con.execute("CREATE OR REPLACE TEMP TABLE scope (run_key VARCHAR)")
        self._views("run_copy")
        con.execute(f"CREATE OR REPLACE TEMP TABLE board_runs AS {BOARD_RUNS} WHERE false")

    def _views(self, rows: str) -> None:
        """The store's ``attempts`` and ``runs`` views, verbatim, over ``rows``."""
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW runs_all AS SELECT * EXCLUDE (_file) FROM {rows}")
        self.con.execute(ATTEMPTS_VIEW)
        self.con.execute(RUNS_VIEW)

    def sync(self, listed: Listing) -> set[str]:
        """Read the files of ``listed`` not read yet, drop the rows of files no longer listed (or
        changed) and update ``board_runs`` for the run keys concerned; returns the cells those
        run keys belonged to or now belong to. Raises ``duckdb.IOException`` when a file vanished
        between listing and reading (the caller lists again)."""
        everything = not self.files
        gone = [p for p, ident in self.files.items() if listed.get(p) != ident]
        new = [p for p, ident in listed.items() if self.files.get(p) != ident]
        self.files_read = 0
        if not gone and not new:
            return set()
        con = self.con
        con.execute("DELETE FROM scope")
        if gone:
            con.execute("INSERT INTO scope SELECT DISTINCT run_key FROM run_copy WHERE _file IN (SELECT unnest(?::VARCHAR[]))",
                        [gone])
            con.execute("DELETE FROM run_copy WHERE _file IN (SELECT unnest(?::VARCHAR[]))", [gone])
        if new:
            self._read(new)
            if not everything:
                con.execute("INSERT INTO scope SELECT DISTINCT run_key FROM run_copy "
                            "WHERE _file IN (SELECT unnest(?::VARCHAR[]))", [new])
        self.files = dict(listed)
        self.files_read = len(new)
        return self._update_runs(everything)

    def _read(self, paths: list[str]) -> None:
        con = self.con
        source = f"read_parquet({sql_list([Path(p) for p in paths])}, union_by_name=true, filename=true, " \
                 "hive_partitioning=false)"
        present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        columns = ", ".join(c for c in COLUMNS if c in present)
        con.execute(f"INSERT INTO run_copy BY NAME SELECT {columns}, filename AS _file FROM {source}")

    def _update_runs(self, everything: bool) -> set[str]:
        """Replace the ``board_runs`` rows of the run keys in ``scope`` (all of them when
        ``everything``); the cells concerned."""
        con = self.con
        if everything:
            self._views("run_copy")
            con.execute(f"CREATE OR REPLACE TEMP TABLE board_runs AS {BOARD_RUNS}")
            return {r[0] for r in con.execute("SELECT DISTINCT cell FROM board_runs").fetchall()}
        con.execute("CREATE OR REPLACE TEMP TABLE affected AS SELECT DISTINCT cell FROM board_runs "
                    "WHERE run_key IN (SELECT run_key FROM scope)")
        con.execute("DELETE FROM board_runs WHERE run_key IN (SELECT run_key FROM scope)")
        self._views("(SELECT * FROM run_copy WHERE run_key IN (SELECT run_key FROM scope))")
        con.execute(f"INSERT INTO board_runs {BOARD_RUNS}")
        self._views("run_copy")
        con.execute("INSERT INTO affected SELECT DISTINCT cell FROM board_runs WHERE run_key IN "
                    "(SELECT run_key FROM scope)")
        return {r[0] for r in con.execute("SELECT DISTINCT cell FROM affected").fetchall()}
