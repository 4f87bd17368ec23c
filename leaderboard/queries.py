"""The leaderboard's questions, asked of the store's DuckDB views with bound parameters only.

Which method reaches this quality for the fewest joules, and what does each point of accuracy
cost? Rankings aggregate seeds (median and quartiles, never one run as a fact), the Pareto front
is quality against training energy, and every energy figure keeps its source: estimated and
measured energy are grouped, ranked against a baseline and put on a front separately, so an
estimate is never silently compared with a measurement.

Speed at a million runs: the heavy work (the de-duplicated run table and the per-cell medians) is
done once per snapshot of the store, and the cells are kept on disk under the cache root keyed by
the store's run files, so a new server process over an unchanged (compacted) store starts from
them. Filter changes within the default scope (status ok, no search trials, any hardware,
campaign and date) filter those cells; other scopes aggregate the run table again.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from joulebench.harness.cache import cache_root
from joulebench.harness.store import Store
from joulebench.harness.summary import key_params

BASELINE = "backprop"
FILTER_COLUMNS = ("task", "preset", "method", "hardware", "campaign", "status")
CELLS_VERSION = "cells-v1"
"""Bump when CELLS changes: the cached cells of older versions are then ignored."""

OPTIONAL_COLUMNS = {"cell_key": "VARCHAR", "lineage_key": "VARCHAR", "code_hash": "VARCHAR",
                    "hardware_class": "VARCHAR", "key_scheme": "VARCHAR", "attempt_id": "VARCHAR"}
"""Schema-v2 columns a store of v1 files lacks: read as NULL there."""

SNAPSHOT = """
CREATE OR REPLACE TEMP TABLE board_runs AS
WITH attempts AS (
    SELECT run_key, count(*) FILTER (WHERE status <> 'ok') AS failed_attempts FROM runs_all GROUP BY run_key
), base AS (
    SELECT r.*, {optional}
           coalesce(nullif(gpu_model, ''), nullif(cpu_model, ''), device) AS hardware,
           coalesce(energy_estimated, true) AS estimated,
           coalesce(concat_ws(' + ', budget_steps || ' steps', budget_epochs || ' epochs',
                              budget_seconds || ' s'), '') AS budget
    FROM runs r
)
SELECT b.*, a.failed_attempts,
       coalesce(nullif(b.hw_class, ''), b.hardware, '') AS hardware_shown,
       coalesce(b.cell_id, md5(concat_ws('|', task, preset, method, model, method_params, task_params,
                                         budget))) AS cell
FROM base b LEFT JOIN attempts a USING (run_key)
"""
"""The de-duplicated runs, materialised once per snapshot (``hardware``: the GPU if any, else
the CPU; a row that does not say whether its energy was measured counts as estimated;
``failed_attempts``: every stored attempt of the run key that did not end ok)."""

CELLS = """
SELECT task, preset, method, model, method_params, task_params, estimated, cell, budget,
       hardware_shown AS hardware_class,
       any_value(key_scheme) AS key_scheme, coalesce(any_value(lineage), cell) AS lineage,
       arg_max(code_hash, finished_at) AS code_hash, max(finished_at) AS last_finished,
       any_value(primary_metric) AS metric, any_value(higher_is_better) AS higher_is_better,
       any_value(target) AS target,
       count(*) FILTER (WHERE chosen) AS runs, count(DISTINCT seed) FILTER (WHERE chosen) AS seeds,
       coalesce(sum(failed_attempts), 0) AS failed,
       median(primary_value) FILTER (WHERE chosen) AS quality,
       quantile_cont(primary_value, 0.25) FILTER (WHERE chosen) AS quality_q25,
       quantile_cont(primary_value, 0.75) FILTER (WHERE chosen) AS quality_q75,
       median(train_energy_j) FILTER (WHERE chosen) AS train_j,
       string_agg(DISTINCT energy_source, ' | ') FILTER (WHERE chosen) AS energy_source,
       median(train_s) FILTER (WHERE chosen) AS train_s, median(co2_g) FILTER (WHERE chosen) AS co2_g,
       median(device_hours) FILTER (WHERE chosen) AS device_hours,
       median(train_energy_j / nullif(samples, 0)) FILTER (WHERE chosen) AS j_per_sample,
       avg(CASE WHEN reached_target THEN 1.0 WHEN reached_target IS NOT NULL THEN 0.0 END)
           FILTER (WHERE chosen) AS reached,
       median(time_to_target_s) FILTER (WHERE chosen) AS time_to_target_s,
       median(energy_to_target_j) FILTER (WHERE chosen) AS energy_to_target_j
FROM (SELECT *, {chosen} AS chosen FROM board_runs {where})
GROUP BY task, preset, method, model, method_params, task_params, estimated, cell, budget, hardware_shown
HAVING count(*) FILTER (WHERE chosen) > 0
"""
"""One row per leaderboard cell (the experiment minus its seed) and energy kind: medians over the
runs of the chosen statuses, and the count of failed attempts of the cell's run keys."""

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


def store_digest(store: Store) -> str:
    """Names the store's run files as they are now (path, size, mtime): a new or rewritten file
    changes it, so cached cells never outlive the data they summarise."""
    h = hashlib.sha256(CELLS_VERSION.encode())
    for path in store.files("runs"):
        stat = path.stat()
        h.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


@dataclass
class Board:
    """The store behind the app: one DuckDB connection, guarded by a lock (Streamlit serves each
    browser session from its own thread), over a snapshot rebuilt by ``refresh``."""

    root: Path
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.store = Store(Path(self.root))
        self.con = self.store.connect()
        self._snapshot()

    # -- snapshot -----------------------------------------------------------------------------
    def _snapshot(self) -> None:
        """Load the cells (and the filters' choices) of this state of the store from the cache,
        or build the run table and aggregate them; the run table itself is built on demand."""
        self.refreshed = time.monotonic()
        self.runs_ready = False
        self.digest = store_digest(self.store)
        cached = self._cache_paths()
        try:
            self.cells_all = pd.read_parquet(cached[0])
            self.choices = json.loads(cached[1].read_text())
            return
        except (OSError, ValueError):
            pass
        self._build_runs()
        self.cells_all = mark_latest_code(self.df(CELLS.format(chosen="status = 'ok'",
                                                               where=" WHERE parent_key IS NULL")))
        self.choices = {c: self._distinct_runs(c) for c in FILTER_COLUMNS if c != "preset"}
        self.choices["count"] = int(self.df("SELECT count(*) AS n FROM board_runs")["n"].iloc[0])
        self.choices["presets"] = self.df("SELECT DISTINCT task, preset FROM board_runs WHERE preset IS NOT NULL "
                                          "AND preset <> '' ORDER BY 1, 2").values.tolist()
        self._save_cache(cached)

    def _cache_paths(self) -> tuple[Path, Path]:
        base = cache_root("leaderboard") / self.digest
        return base.with_suffix(".cells.parquet"), base.with_suffix(".choices.json")

    def _save_cache(self, paths: tuple[Path, Path]) -> None:
        """Best effort: a read-only cache root only costs the next process the aggregation."""
        try:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            tmp = paths[0].with_name(paths[0].name + ".tmp")
            self.cells_all.to_parquet(tmp, index=False)
            tmp.replace(paths[0])
            tmp = paths[1].with_name(paths[1].name + ".tmp")
            tmp.write_text(json.dumps(self.choices, default=str))
            tmp.replace(paths[1])
        except OSError:
            pass

    def _build_runs(self) -> None:
        with self.lock:
            if self.runs_ready:
                return
            present = {r[0] for r in self.store.execute("DESCRIBE runs_all", con=self.con).fetchall()}
            optional = "".join(
                f"{name if name in present else f'CAST(NULL AS {typ})'} AS {alias}, "
                for name, typ, alias in (("cell_key", "VARCHAR", "cell_id"), ("lineage_key", "VARCHAR", "lineage"),
                                         ("hardware_class", "VARCHAR", "hw_class")))
            missing = [f"CAST(NULL AS {t}) AS {c}" for c, t in OPTIONAL_COLUMNS.items()
                       if c not in present and c not in ("cell_key", "lineage_key", "hardware_class")]
            self.store.execute(SNAPSHOT.format(optional=optional + "".join(m + ", " for m in missing)), con=self.con)
            self.runs_ready = True

    def refresh(self, max_age_s: float = 0.0) -> None:
        """Re-list the store's files (new runs) when the snapshot is older than ``max_age_s``."""
        with self.lock:
            if time.monotonic() - self.refreshed >= max_age_s:
                if store_digest(self.store) == self.digest:
                    self.refreshed = time.monotonic()
                    return
                self.con = self.store.connect(self.con)
                self._snapshot()

    def df(self, sql: str, values: list | None = None) -> pd.DataFrame:
        with self.lock:
            return self.store.execute(sql, values or [], con=self.con).df()

    def runs_df(self, sql: str, values: list | None = None) -> pd.DataFrame:
        """A query of the run table (built on first use)."""
        self._build_runs()
        return self.df(sql, values)

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
            frame = mark_latest_code(self.runs_df(CELLS.format(chosen=chosen, where=where),
                                                  [*f.statuses, *values]))
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
        frame["key_params"] = [key_params(t, p, m, mp, tp, with_model=False) for t, p, m, mp, tp in
                               frame[["task", "preset", "method", "method_params", "task_params"]].itertuples(
                                   index=False)]
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
        fewest joules and backprop's figures beside them (latest code, default scope)."""
        rows = [overview_row(task, preset, bool(est), group)
                for (task, preset, est), group in self.cells(Filters()).groupby(["task", "preset", "estimated"])]
        seen = {(r["task"], r["preset"]) for r in rows}
        rows += [{"task": t, "preset": p, "estimated": None, "runs": 0} for t, p in self.choices["presets"]
                 if (t, p) not in seen]  # every task is listed, also one without a successful run
        return pd.DataFrame(rows).sort_values(["task", "preset"], kind="stable").reset_index(drop=True)

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
        frame = self.runs_df(f"""SELECT c.run_key, r.method, r.seed, r.estimated, r.primary_metric, c.step,
                                        c.samples, c.train_s, c.train_energy_j, c.metrics_json
                                 FROM curves_all c JOIN board_runs r
                                   ON c.run_key = r.run_key AND c.run_started_at = r.started_at
                                 WHERE c.run_key IN ({marks}) ORDER BY c.run_key, c.step""", run_keys)
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
        frame = self.runs_df("SELECT * FROM board_runs WHERE run_key = ?", [run_key])
        return None if frame.empty else frame.iloc[0].to_dict()

    def run_list(self, f: Filters, limit: int = 500) -> pd.DataFrame:
        """The newest runs matching the filters: key, method, seed, status (for choosing one)."""
        where, values = f.where()
        return self.runs_df(f"""SELECT run_key, method, model, seed, status FROM board_runs {where}
                                ORDER BY finished_at DESC NULLS LAST LIMIT ?""", [*values, int(limit)])

    def run_keys(self, f: Filters, limit: int = 500) -> list[str]:
        return self.run_list(f, limit)["run_key"].tolist()


def mark_latest_code(cells: pd.DataFrame) -> pd.DataFrame:
    """``is_latest_code``: the cell carries the code version of its lineage's newest run (a
    lineage is one configuration across code versions); cells without a code hash count as latest."""
    if cells.empty:
        return cells.assign(is_latest_code=pd.Series(dtype=bool))
    newest = cells.sort_values("last_finished").groupby(["lineage", "estimated"])["code_hash"].last()
    latest = [code is None or pd.isna(code) or newest.get((lineage, est)) == code
              for lineage, est, code in cells[["lineage", "estimated", "code_hash"]].itertuples(index=False)]
    return cells.assign(is_latest_code=latest)


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
