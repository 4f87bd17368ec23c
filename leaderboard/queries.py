"""The leaderboard's questions, asked of the store's rows with bound parameters only.

Which method reaches this quality for the fewest joules, and what does each point of accuracy
cost? Rankings aggregate seeds (median and quartiles, never one run as a fact), the Pareto front
is quality against training energy, and every energy figure keeps its source: estimated and
measured energy are grouped, ranked against a baseline and put on a front separately, so an
estimate is never silently compared with a measurement.

A cell is what the store's ``leaderboard`` view calls one (``store_views.cells_query``, asked of
the board's copy of the rows, split by energy kind). Speed at a million runs: the cells, the
overview and the filters' choices are computed once per state of the store and persisted beside
it (``snapshot``), so a new server process draws its first page from them without reading a run;
filter changes within the default scope (status ok, no search trials, any hardware, campaign and
date) pick among those cells. The copy of the rows (``rows.RunCopy``) is read when a view needs
runs, and a refresh then reads only new files and re-aggregates only the cells they touch.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from joulebench.harness.store import READ_TRIES, Store
from joulebench.harness.store_views import cells_query, curve_points
from joulebench.harness.summary import key_params
from joulebench.leaderboard import snapshot
from joulebench.leaderboard.rows import RunCopy, digest, listing

BASELINE = "backprop"
FILTER_COLUMNS = ("task", "preset", "method", "hardware", "campaign", "status")
CELL_COLUMNS = """
SELECT cell_key AS cell, estimated, task, preset, method, model, method_params, task_params, key_scheme,
       coalesce(lineage_key, cell_key) AS lineage, code_hash, hardware_class,
       coalesce(concat_ws(' + ', budget_steps || ' steps', budget_epochs || ' epochs', budget_seconds || ' s'), '')
           AS budget,
       primary_metric AS metric, higher_is_better, target, runs, seeds, failed_attempts AS failed,
       primary_median AS quality, primary_q25 AS quality_q25, primary_q75 AS quality_q75,
       train_energy_j AS train_j, energy_source, train_s, co2_g, device_hours, joules_per_sample AS j_per_sample,
       reached, time_to_target_s, energy_to_target_j, last_finished_at AS last_finished, is_latest_code
FROM ({cells})"""
"""The store's cells (``cells_query``) under the names the pages use."""

OVERVIEW_FIELDS = ("task", "preset", "estimated", "method", "model", "method_params", "task_params", "metric",
                   "higher_is_better", "target", "quality", "reached", "energy_to_target_j", "train_j", "runs")

RANKING_COLUMNS = ["rank", "method", "model", "key_params", "budget", "hardware_class", "metric", "quality",
                   "spread", "seeds", "failed", "train_j", "estimated", "energy_source", "energy_vs_backprop",
                   "energy_to_target_j", "energy_to_target_vs_backprop", "time_to_target_s",
                   "time_to_target_vs_backprop", "reached", "train_s", "co2_g", "device_hours", "j_per_sample",
                   "quality_q25", "quality_q75", "runs", "is_latest_code", "key_scheme", "task", "preset"]


@dataclass(frozen=True)
class Filters:
    """What the reader selected; every value is bound as a parameter, never pasted into SQL."""

    task: str | None = None
    preset: str | None = None
    methods: tuple[str, ...] = ()
    hardware: tuple[str, ...] = ()
    campaigns: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ("ok",)
    since: date | None = None
    hide_estimates: bool = False
    include_trials: bool = False
    older_code: bool = False

    def default_scope(self) -> bool:
        """True when the cached cells answer: the filters only pick among them."""
        return (not self.hardware and not self.campaigns and self.statuses == ("ok",) and not self.since
                and not self.include_trials)

    def where(self, methods: bool = True, statuses: bool = True) -> tuple[str, list]:
        clauses, values = [], []
        for column, value in (("task", self.task), ("preset", self.preset)):
            if value:
                clauses.append(f"{column} = ?")
                values.append(value)
        for column, options in (("method", self.methods if methods else ()), ("hardware", self.hardware),
                                ("campaign", self.campaigns), ("status", self.statuses if statuses else ())):
            if options:
                clauses.append(f"{column} IN ({', '.join('?' for _ in options)})")
                values.extend(options)
        if self.since:
            clauses.append("finished_at >= ?")
            values.append(pd.Timestamp(self.since, tz="UTC").to_pydatetime())
        if self.hide_estimates:
            clauses.append("NOT estimated")
        if not self.include_trials:
            clauses.append("parent_key IS NULL")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


@dataclass
class Board:
    """The store behind the app: the snapshot of its current state (cells, overview, choices),
    and, once a view needs runs, the copy of its rows, in one DuckDB connection guarded by a lock
    (Streamlit serves each browser session from its own thread)."""

    root: Path
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.store = Store(Path(self.root))
        self.con = duckdb.connect()
        self.copy: RunCopy | None = None
        self._store_con: duckdb.DuckDBPyConnection | None = None
        self.refreshed = time.monotonic()
        self.listed = listing(self.store)
        self.key = digest(self.listed, snapshot.VERSION)
        self.cells_all: pd.DataFrame | None = None
        self.overview_table = pd.DataFrame(columns=["task", "preset", "estimated", "runs"])
        persisted = snapshot.load(self.root, self.key)
        if persisted is None:
            self._runs_copy()
            self._aggregate(None)
        else:
            self._use(persisted)

    # -- the snapshot -------------------------------------------------------------------------
    def _use(self, snap: snapshot.Snapshot) -> None:
        self.cells_all, self.overview_table, self.choices = snap.cells, snap.overview, snap.choices

    def _runs_copy(self) -> RunCopy:
        """The copy of the rows of the listed files (read on first use)."""
        with self.lock:
            if self.copy is None:
                copy = RunCopy(self.con)
                self._sync(copy)
                self.copy = copy
            return self.copy

    def _sync(self, copy: RunCopy) -> set[str]:
        """Bring the copy to the store's files (listing again when files vanish under a read)."""
        for attempt in range(READ_TRIES):
            try:
                return copy.sync(self.listed)
            except duckdb.IOException:
                if attempt == READ_TRIES - 1:
                    raise
                self.listed = listing(self.store)
        raise AssertionError("unreachable")

    def _aggregate(self, cells: set[str] | None) -> None:
        """Cells of the default scope (``cells``: only those, and their lineages' other cells, are
        aggregated again; None: all), then the overview and choices; persisted."""
        with self.lock:
            groups = None
            if cells is None or self.cells_all is None:
                self.cells_all = self._cells("status = 'ok'", " WHERE parent_key IS NULL", [])
            else:
                before = self.cells_all
                self.cells_all, gone = self._update_cells(cells)
                groups = set().union(*(task_presets(frame[frame["cell"].isin(gone)]) for frame in
                                       (before, self.cells_all)))
            self.choices = self._choices()
            self.overview_table = self._overview(groups)
            if self.listed:  # an empty store is not worth a folder in the results directory
                snapshot.save(self.root, self.key, snapshot.Snapshot(self.cells_all, self.overview_table,
                                                                     self.choices))

    def _cells(self, chosen: str, where: str, values: list) -> pd.DataFrame:
        source = f"(SELECT *, {chosen} AS chosen FROM board_runs {where})"
        frame = self.df(CELL_COLUMNS.format(cells=cells_query(source, split=("estimated",))), values)
        return frame.assign(key_params=[key_params(t, p, m, mp, tp, with_model=False) for t, p, m, mp, tp in
                                        frame[["task", "preset", "method", "method_params", "task_params"]]
                                        .itertuples(index=False)])

    def _update_cells(self, cells: set[str]) -> tuple[pd.DataFrame, set[str]]:
        """The cells touched by new or vanished files, with every cell of their lineages (whose
        latest-code mark they may change), aggregated again; the others are kept. Also returns
        the cells replaced."""
        old = self.cells_all
        if not cells:
            return old, set()
        lineages = set(old.loc[old["cell"].isin(cells), "lineage"]) | cells
        self.con.execute("CREATE OR REPLACE TEMP TABLE touched AS SELECT DISTINCT cell FROM board_runs "
                         "WHERE cell IN (SELECT unnest(?::VARCHAR[])) OR lineage_key IN (SELECT unnest(?::VARCHAR[]))",
                         [sorted(cells), sorted(lineages)])
        fresh = self._cells("status = 'ok'", " WHERE parent_key IS NULL AND cell IN (SELECT cell FROM touched)", [])
        gone = cells | set(self.df("SELECT cell FROM touched")["cell"])  # a cell left without runs goes too
        kept = old[~old["cell"].isin(gone)]
        return (pd.concat([kept, fresh], ignore_index=True) if len(kept) else fresh), gone

    def _choices(self) -> dict:
        choices: dict = {c: self._distinct_runs(c) for c in FILTER_COLUMNS if c != "preset"}
        choices["count"] = int(self.df("SELECT count(*) AS n FROM board_runs")["n"].iloc[0])
        choices["presets"] = self.df("SELECT DISTINCT task, preset FROM board_runs WHERE preset IS NOT NULL "
                                     "AND preset <> '' ORDER BY 1, 2").values.tolist()
        return choices

    def refresh(self, max_age_s: float = 0.0) -> None:
        """List the store's files when the snapshot is older than ``max_age_s``; when they changed,
        read only the new ones and aggregate again only the cells they touch."""
        with self.lock:
            if time.monotonic() - self.refreshed < max_age_s:
                return
            self.refreshed = time.monotonic()
            listed = listing(self.store)
            key = digest(listed, snapshot.VERSION)
            if key == self.key:
                return
            self.listed, self.key, self._store_con = listed, key, None
            persisted = snapshot.load(self.root, key) if self.copy is None else None
            if persisted is not None:  # another server process aggregated this state already
                self._use(persisted)
                return
            if self.copy is None:
                self._runs_copy()  # reads every listed file, once per process
                self._aggregate(None)
            else:
                self._aggregate(self._sync(self.copy))

    def files_read(self) -> int:
        """Run files the last refresh (or the first read of the rows) read."""
        return self.copy.files_read if self.copy is not None else 0

    def df(self, sql: str, values: list | None = None) -> pd.DataFrame:
        with self.lock:
            return self.con.execute(sql, values or []).df()

    def runs_df(self, sql: str, values: list | None = None) -> pd.DataFrame:
        """A query of the run table (the copy of the rows is read on first use)."""
        self._runs_copy()
        return self.df(sql, values)

    def store_df(self, sql: str, values: list) -> pd.DataFrame:
        """A query of the store's own views (a run's every column, curve points)."""
        with self.lock:
            if self._store_con is None:
                self._store_con = self.store.connect()
            return self.store.execute(sql, values, con=self._store_con).df()
    # -- choices for the filters -----------------------------------------------------------
    def count(self) -> int:
        return int(self.choices["count"])

    def _distinct_runs(self, column: str) -> list:
        frame = self.df(f"SELECT DISTINCT {column} AS v FROM board_runs WHERE {column} IS NOT NULL ORDER BY 1")
        return [v for v in frame["v"].tolist() if v != ""]

    def distinct(self, column: str, task: str | None = None) -> list:
        """Values of one filter column (presets: those of ``task`` when given)."""
        if column not in FILTER_COLUMNS:
            raise ValueError(f"no filter on {column!r}")
        if column == "preset":
            return sorted({p for t, p in self.choices["presets"] if not task or t == task})
        return list(self.choices[column])

    # -- cells and rankings -------------------------------------------------------------------
    def cells(self, f: Filters, methods: bool = True) -> pd.DataFrame:
        """The cells the filters select (older-code cells only with ``f.older_code``)."""
        if f.default_scope():
            frame = self.cells_all
        else:
            where, values = f.where(methods=False, statuses=False)
            chosen = f"status IN ({', '.join('?' for _ in f.statuses)})" if f.statuses else "true"
            self._runs_copy()
            frame = self._cells(chosen, where, [*f.statuses, *values])
        keep = np.ones(len(frame), dtype=bool)
        for column, value in (("task", f.task), ("preset", f.preset)):
            if value:
                keep &= (frame[column] == value).to_numpy()
        if methods and f.methods:
            keep &= frame["method"].isin(f.methods).to_numpy()
        if f.hide_estimates:
            keep &= ~frame["estimated"].to_numpy(dtype=bool)
        if not f.older_code:
            keep &= frame["is_latest_code"].to_numpy(dtype=bool)
        return frame[keep]
    def ranking(self, f: Filters) -> pd.DataFrame:
        """One row per cell and energy kind: medians over seeds, and ratios to the backprop
        baseline of the same task, preset and energy kind."""
        frame = self.cells(f).copy()
        if frame.empty:
            return pd.DataFrame(columns=RANKING_COLUMNS)
        higher = bool(frame["higher_is_better"].iloc[0])
        frame = frame.sort_values(["quality", "train_j"], ascending=[not higher, True], na_position="last")
        frame["spread"] = frame["quality_q75"] - frame["quality_q25"]
        base = self.baseline(f)
        for column, ratio in (("train_j", "energy_vs_backprop"), ("energy_to_target_j", "energy_to_target_vs_backprop"),
                              ("time_to_target_s", "time_to_target_vs_backprop")):
            reference = frame["estimated"].map(base[column]) if not base.empty else np.nan
            frame[ratio] = frame[column] / reference
        frame["rank"] = range(1, len(frame) + 1)
        return frame[RANKING_COLUMNS].reset_index(drop=True)

    def baseline(self, f: Filters) -> pd.DataFrame:
        """Per energy kind (index: estimated), the backprop cell of this task and preset with the
        most runs (ties: the best median quality), whatever methods are selected."""
        if not (f.task and f.preset):
            return pd.DataFrame()
        frame = self.cells(replace(f, methods=(BASELINE,)))
        return baseline_of(frame)

    def overview(self) -> pd.DataFrame:
        """Per task, preset and energy kind: the best quality, the cell reaching the target for the
        fewest joules and backprop's figures beside them (latest code, default scope); computed
        once per snapshot."""
        return self.overview_table

    def _overview(self, groups: set[tuple[str, str]] | None = None) -> pd.DataFrame:
        """The overview's lines (``groups``: only those of these task and preset pairs are
        computed again, the others kept)."""
        cells = self.cells(Filters())[list(OVERVIEW_FIELDS)]  # few columns: pandas copies less per group
        kept = self.overview_table.iloc[:0] if groups is None else self.overview_table
        if groups is not None:
            cells = cells[in_pairs(cells, groups)]
            kept = kept[~in_pairs(kept, groups)]
        rows = [overview_row(task, preset, bool(est), group)
                for (task, preset, est), group in cells.groupby(["task", "preset", "estimated"], sort=False)]
        seen = {(r["task"], r["preset"]) for r in rows} | task_presets(kept)
        rows += [{"task": t, "preset": p, "estimated": None, "runs": 0} for t, p in self.choices["presets"]
                 if (t, p) not in seen]  # every task is listed, also one without a successful run
        if not rows and kept.empty:
            return pd.DataFrame(columns=["task", "preset", "estimated", "runs"])
        frame = pd.concat([kept, pd.DataFrame(rows)], ignore_index=True) if len(kept) else pd.DataFrame(rows)
        return frame.sort_values(["task", "preset", "estimated"], kind="stable").reset_index(drop=True)

    # -- runs ---------------------------------------------------------------------------------
    def points(self, f: Filters) -> pd.DataFrame:
        """One point per run (quality against energy) with its Pareto-front membership, the front
        drawn within each energy kind (estimated, measured)."""
        where, values = f.where()
        frame = self.runs_df(f"""SELECT run_key, method, model, seed, hardware, primary_metric, primary_value,
                                        higher_is_better, train_energy_j, estimated, energy_source, task, preset,
                                        method_params, task_params
                                 FROM board_runs {where}""", values)
        frame = frame.dropna(subset=["primary_value", "train_energy_j"]).reset_index(drop=True)
        frame["pareto"] = False
        for _, group in frame.groupby("estimated"):
            frame.loc[group.index, "pareto"] = pareto_front(group)
        return frame

    def curves(self, run_keys: list[str]) -> pd.DataFrame:
        """Validation points of these runs, with the value of each run's primary metric."""
        columns = ["run_key", "method", "seed", "estimated", "primary_metric", "step", "samples", "train_s",
                   "train_energy_j", "value", "metrics_json"]
        if not run_keys:
            return pd.DataFrame(columns=columns)
        marks = ", ".join("?" for _ in run_keys)
        stored = self.store_df(f"SELECT * FROM curves_all WHERE run_key IN ({marks})", run_keys)
        self._runs_copy()
        with self.lock:
            self.con.register("_curve_rows", stored)
            frame = self.df(f"""SELECT c.run_key, r.method, r.seed, r.estimated, r.primary_metric, c.step,
                                       c.samples, c.train_s, c.train_energy_j, c.metrics_json
                                FROM ({curve_points("_curve_rows", "board_runs")}) c JOIN board_runs r USING (run_key)
                                ORDER BY c.run_key, c.step""")
            self.con.unregister("_curve_rows")
        frame["value"] = [json.loads(m or "{}").get(p) for m, p in zip(frame["metrics_json"], frame["primary_metric"])]
        return frame[columns]

    def scaling(self, f: Filters) -> pd.DataFrame:
        where, values = f.where()
        where = f"{where} AND train_s IS NOT NULL" if where else " WHERE train_s IS NOT NULL"
        # device-hours of the training window, the window train_energy_j covers (scaling.WINDOWS)
        return self.runs_df(f"""SELECT run_key, method, hardware, world_size, nodes, local_batch, global_batch,
                                  world_size * train_s / 3600.0 AS train_device_hours, device_hours,
                                  train_energy_j, total_energy_j, train_s, wall_s, samples,
                                  gradient_updates, energy_estimated, estimated,
                                  samples / nullif(world_size * train_s / 3600.0, 0) AS samples_per_device_hour,
                                  gradient_updates / nullif(world_size * train_s / 3600.0, 0)
                                      AS updates_per_device_hour
                                FROM board_runs {where}""", values)

    def run(self, run_key: str) -> dict | None:
        """Every stored column of the run's shown attempt (the store's ``runs`` view)."""
        frame = self.store_df("SELECT * FROM runs WHERE run_key = ?", [run_key])
        if frame.empty:
            return None
        row = frame.iloc[0].to_dict()
        estimated = row.get("energy_estimated")
        return {**row, "estimated": True if estimated is None or pd.isna(estimated) else bool(estimated)}

    def run_list(self, f: Filters, limit: int = 500) -> pd.DataFrame:
        """The newest runs matching the filters: key, method, seed, status (for choosing one)."""
        where, values = f.where()
        return self.runs_df(f"""SELECT run_key, method, model, seed, status FROM board_runs {where}
                                ORDER BY finished_at DESC NULLS LAST LIMIT ?""", [*values, int(limit)])

    def run_keys(self, f: Filters, limit: int = 500) -> list[str]:
        return self.run_list(f, limit)["run_key"].tolist()




def task_presets(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["task"], frame["preset"]))


def in_pairs(frame: pd.DataFrame, pairs: set[tuple[str, str]]) -> np.ndarray:
    """Rows whose (task, preset) is one of ``pairs``."""
    return np.array([pair in pairs for pair in zip(frame["task"], frame["preset"])], dtype=bool)


def baseline_of(cells: pd.DataFrame) -> pd.DataFrame:
    """The backprop cell with the most runs per energy kind (ties: best median quality)."""
    frame = cells[cells["method"] == BASELINE]
    if frame.empty:
        return pd.DataFrame()
    higher = bool(frame["higher_is_better"].iloc[0])
    frame = frame.sort_values(["runs", "quality"], ascending=[False, not higher])
    return frame.drop_duplicates("estimated").set_index("estimated")


def label(cell: pd.Series) -> str:
    """A cell as a reader names it: method, model and what differs from the defaults."""
    params = key_params(cell["task"], cell["preset"], cell["method"], cell["method_params"], cell["task_params"],
                        with_model=False)
    return " · ".join(x for x in (cell["method"], cell["model"], params) if x and not pd.isna(x))


def overview_row(task: str, preset: str, estimated: bool, cells: pd.DataFrame) -> dict:
    """One line of the overview. "Reaches the target": at least half of the cell's seeds did."""
    higher = bool(cells["higher_is_better"].iloc[0])
    best = cells.sort_values("quality", ascending=not higher, na_position="last").iloc[0]
    reaching = cells[(cells["reached"] >= 0.5) & cells["energy_to_target_j"].notna()]
    cheapest = reaching.sort_values("energy_to_target_j").iloc[0] if len(reaching) else None
    base = baseline_of(cells)
    base = base.iloc[0] if not base.empty else None
    return {"task": task, "preset": preset, "estimated": estimated, "metric": best["metric"],
            "higher_is_better": higher, "target": best["target"], "cells": len(cells), "runs": int(cells["runs"].sum()),
            "best_quality": best["quality"], "best_by": label(best),
            "cheapest_by": label(cheapest) if cheapest is not None else None,
            "cheapest_energy_to_target_j": cheapest["energy_to_target_j"] if cheapest is not None else None,
            "cheapest_quality": cheapest["quality"] if cheapest is not None else None,
            "backprop_quality": base["quality"] if base is not None else None,
            "backprop_energy_to_target_j": base["energy_to_target_j"] if base is not None else None,
            "backprop_train_j": base["train_j"] if base is not None else None}


def pareto_front(points: pd.DataFrame) -> list[bool]:
    """True for runs no other run beats on both quality and training energy."""
    if points.empty:
        return []
    higher = bool(points["higher_is_better"].iloc[0])
    quality = points["primary_value"].to_numpy(dtype=float) * (1.0 if higher else -1.0)
    energy = points["train_energy_j"].to_numpy(dtype=float)
    order = np.lexsort((-quality, energy))  # by energy, then best quality first
    best_so_far = np.maximum.accumulate(quality[order])
    previous = np.concatenate(([-np.inf], best_so_far[:-1]))
    front = np.zeros(len(points), dtype=bool)
    front[order] = quality[order] > previous
    return front.tolist()
