"""The leaderboard's questions, asked of the store's DuckDB views with bound parameters only.

Which method reaches this quality for the fewest joules, and what does each point of accuracy
cost? Rankings aggregate seeds (median and quartiles, never one run as a fact), the Pareto front
is quality against training energy, and every energy figure keeps its source: estimated and
measured energy are grouped, ranked against a baseline and put on a front separately, so an
estimate is never silently compared with a measurement.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from joulebench.harness.store import Store

BASELINE = "backprop"
FILTER_COLUMNS = ("task", "preset", "method", "hardware", "campaign", "status")

SNAPSHOT = """
CREATE OR REPLACE TEMP TABLE board_runs AS
SELECT *, coalesce(nullif(gpu_model, ''), nullif(cpu_model, ''), device) AS hardware,
       coalesce(energy_estimated, true) AS estimated
FROM runs
"""
"""The de-duplicated runs, materialised once per refresh (``hardware``: the GPU if any, else the
CPU; a row that does not say whether its energy was measured counts as estimated)."""


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

    def where(self, methods: bool = True) -> tuple[str, list]:
        clauses, values = [], []
        for column, value in (("task", self.task), ("preset", self.preset)):
            if value:
                clauses.append(f"{column} = ?")
                values.append(value)
        for column, options in (("method", self.methods if methods else ()), ("hardware", self.hardware),
                                ("campaign", self.campaigns), ("status", self.statuses)):
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


RANKING = """
SELECT method, model, method_params, task_params, estimated,
       any_value(primary_metric) AS metric, any_value(higher_is_better) AS higher_is_better,
       count(*) AS runs, count(DISTINCT seed) AS seeds,
       median(primary_value) AS quality,
       quantile_cont(primary_value, 0.25) AS quality_q25,
       quantile_cont(primary_value, 0.75) AS quality_q75,
       median(train_energy_j) AS train_j,
       string_agg(DISTINCT energy_source, ' | ') AS energy_source,
       median(train_s) AS train_s, median(co2_g) AS co2_g,
       median(device_hours) AS device_hours,
       median(train_energy_j / nullif(samples, 0)) AS j_per_sample,
       avg(CASE WHEN reached_target THEN 1.0 WHEN reached_target IS NOT NULL THEN 0.0 END) AS reached,
       median(time_to_target_s) AS time_to_target_s,
       median(energy_to_target_j) AS energy_to_target_j
FROM board_runs {where}
GROUP BY method, model, method_params, task_params, estimated
"""

RANKING_COLUMNS = ["rank", "method", "model", "key_params", "metric", "quality", "spread", "seeds", "train_j",
                   "estimated", "energy_source", "energy_vs_backprop", "energy_to_target_j",
                   "energy_to_target_vs_backprop", "time_to_target_s", "time_to_target_vs_backprop", "reached",
                   "train_s", "co2_g", "device_hours", "j_per_sample", "quality_q25", "quality_q75", "runs"]


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

    def _snapshot(self) -> None:
        """Every query reads this plain in-memory table instead of re-running the views' window
        over every file."""
        self.store.execute(SNAPSHOT, con=self.con)
        self.refreshed = time.monotonic()

    def refresh(self, max_age_s: float = 0.0) -> None:
        """Re-list the store's files (new runs) when the snapshot is older than ``max_age_s``."""
        with self.lock:
            if time.monotonic() - self.refreshed >= max_age_s:
                self.con = self.store.connect(self.con)
                self._snapshot()

    def df(self, sql: str, values: list | None = None) -> pd.DataFrame:
        with self.lock:
            return self.store.execute(sql, values or [], con=self.con).df()

    # -- choices for the filters -----------------------------------------------------------
    def count(self) -> int:
        return int(self.df("SELECT count(*) AS n FROM board_runs")["n"].iloc[0])

    def distinct(self, column: str, task: str | None = None) -> list:
        """Values of one filter column (presets: those of ``task`` when given)."""
        if column not in FILTER_COLUMNS:
            raise ValueError(f"no filter on {column!r}")
        where, values = (" AND task = ?", [task]) if task else ("", [])
        frame = self.df(f"SELECT DISTINCT {column} AS v FROM board_runs WHERE {column} IS NOT NULL{where} "
                        "ORDER BY 1", values)
        return [v for v in frame["v"].tolist() if v != ""]

    # -- rankings ---------------------------------------------------------------------------
    def ranking(self, f: Filters) -> pd.DataFrame:
        """One row per configuration (method, model, parameters) and energy kind: medians over
        seeds, and ratios to the backprop baseline of the same task, preset and energy kind."""
        where, values = f.where()
        frame = self.df(RANKING.format(where=where), values)
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
        frame["key_params"] = [key_params(m, p, f.task, f.preset) + task_key_params(f.task, f.preset, t)
                               for m, p, t in zip(frame["method"], frame["method_params"], frame["task_params"])]
        frame["key_params"] = frame["key_params"].str.strip(", ")
        frame["rank"] = range(1, len(frame) + 1)
        return frame[RANKING_COLUMNS].reset_index(drop=True)

    def baseline(self, f: Filters) -> pd.DataFrame:
        """Per energy kind (index: estimated), the backprop configuration of this task and preset
        with the most runs (ties: the best median quality), whatever methods are selected."""
        if not (f.task and f.preset):
            return pd.DataFrame()
        where, values = f.where(methods=False)
        frame = self.df(RANKING.format(where=where + " AND method = ?"), [*values, BASELINE])
        if frame.empty:
            return frame
        higher = bool(frame["higher_is_better"].iloc[0])
        frame = frame.sort_values(["runs", "quality"], ascending=[False, not higher])
        return frame.drop_duplicates("estimated").set_index("estimated")

    def points(self, f: Filters) -> pd.DataFrame:
        """One point per run (quality against energy) with its Pareto-front membership, the front
        drawn within each energy kind (estimated, measured)."""
        where, values = f.where()
        frame = self.df(f"""SELECT run_key, method, model, seed, hardware, primary_metric, primary_value,
                                   higher_is_better, train_energy_j, estimated, energy_source
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
        frame = self.df(f"""SELECT c.run_key, r.method, r.seed, r.estimated, r.primary_metric, c.step,
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
        return self.df(f"""SELECT run_key, method, hardware, world_size, nodes, local_batch, global_batch,
                                  world_size * train_s / 3600.0 AS train_device_hours, device_hours,
                                  train_energy_j, total_energy_j, train_s, wall_s, samples,
                                  gradient_updates, energy_estimated, estimated,
                                  samples / nullif(world_size * train_s / 3600.0, 0) AS samples_per_device_hour,
                                  gradient_updates / nullif(world_size * train_s / 3600.0, 0)
                                      AS updates_per_device_hour
                           FROM board_runs {where}""", values)

    def run(self, run_key: str) -> dict | None:
        frame = self.df("SELECT * FROM board_runs WHERE run_key = ?", [run_key])
        return None if frame.empty else frame.iloc[0].to_dict()

    def run_list(self, f: Filters, limit: int = 500) -> pd.DataFrame:
        """The newest runs matching the filters: key, method, seed, status (for choosing one)."""
        where, values = f.where()
        return self.df(f"""SELECT run_key, method, model, seed, status FROM board_runs {where}
                           ORDER BY finished_at DESC NULLS LAST LIMIT ?""", [*values, int(limit)])

    def run_keys(self, f: Filters, limit: int = 500) -> list[str]:
        return self.run_list(f, limit)["run_key"].tolist()


@lru_cache(maxsize=4096)
def key_params(method: str, params_json: str | None, task: str | None = None, preset: str | None = None) -> str:
    """The method parameters that differ from their defaults (the method's declared ones, as
    overridden by the task's preset for this method), as ``k=v`` pairs."""
    from joulebench.harness.registry import registry

    reg = registry()
    params = json.loads(params_json or "{}")
    declared = reg.methods.get(method)
    defaults = {k: p.default for k, p in declared.params.items()} if declared else {}
    task_cls = reg.tasks.get(task or "")
    if task_cls is not None and preset in task_cls.presets:
        defaults.update(task_cls.presets[preset].method_defaults.get(method) or {})
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if defaults.get(k, object()) != v)


@lru_cache(maxsize=4096)
def task_key_params(task: str | None, preset: str | None, params_json: str | None) -> str:
    """Task parameters that differ from the preset's (the model is a column of its own)."""
    from joulebench.harness.registry import registry

    declared = registry().tasks.get(task or "")
    if declared is None or not params_json:
        return ""
    defaults = {k: p.default for k, p in declared.params.items()}
    if preset in declared.presets:
        defaults.update(declared.presets[preset].params)
    params = json.loads(params_json)
    shown = [f"{k}={v}" for k, v in sorted(params.items())
             if k != "model" and k in defaults and defaults[k] != v]
    return (", " + ", ".join(shown)) if shown else ""


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
