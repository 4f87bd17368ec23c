"""The leaderboard's questions, asked of the store's DuckDB views with bound parameters only.

Which method reaches this quality for the fewest joules, and what does each point of accuracy
cost? Rankings aggregate seeds (median and quartiles, never one run as a fact), the Pareto front
is quality against training energy, and every energy figure keeps its source so estimates are
never silently mixed with measurements.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

from joulebench.harness.store import Store


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

    def where(self) -> tuple[str, list]:
        clauses, values = [], []
        for column, value in (("task", self.task), ("preset", self.preset)):
            if value:
                clauses.append(f"{column} = ?")
                values.append(value)
        for column, options in (("method", self.methods), ("cpu_model", self.hardware),
                                ("campaign", self.campaigns), ("status", self.statuses)):
            if options:
                clauses.append(f"{column} IN ({', '.join('?' for _ in options)})")
                values.extend(options)
        if self.since:
            clauses.append("finished_at >= ?")
            values.append(pd.Timestamp(self.since, tz="UTC").to_pydatetime())
        if self.hide_estimates:
            clauses.append("energy_estimated IS NOT TRUE")
        if not self.include_trials:
            clauses.append("parent_key IS NULL")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


@dataclass
class Board:
    """One connection per app session; views are rebuilt when ``refresh`` is called."""

    root: Path
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.store = Store(Path(self.root))
        self.con = self.store.connect()
        self._snapshot()

    def _snapshot(self) -> None:
        """Materialise the de-duplicated runs once per refresh: every query then reads a plain
        in-memory table instead of re-running the view's window over all files."""
        self.store.execute("CREATE OR REPLACE TEMP TABLE board_runs AS SELECT * FROM runs", con=self.con)
        self.refreshed = time.monotonic()

    def refresh(self, max_age_s: float = 0.0) -> None:
        """Re-list the store's files (new runs) when the snapshot is older than ``max_age_s``."""
        if time.monotonic() - self.refreshed >= max_age_s:
            self.con = self.store.connect(self.con)
            self._snapshot()

    def df(self, sql: str, values: list | None = None) -> pd.DataFrame:
        return self.store.execute(sql, values or [], con=self.con).df()

    # -- choices for the filters -----------------------------------------------------------
    def count(self) -> int:
        return int(self.df("SELECT count(*) AS n FROM board_runs")["n"].iloc[0])

    def distinct(self, column: str) -> list:
        if column not in {"task", "preset", "method", "cpu_model", "campaign", "status"}:
            raise ValueError(f"no filter on {column!r}")
        frame = self.df(f"SELECT DISTINCT {column} AS v FROM board_runs WHERE {column} IS NOT NULL ORDER BY 1")
        return [v for v in frame["v"].tolist() if v != ""]

    # -- rankings ---------------------------------------------------------------------------
    def ranking(self, f: Filters) -> pd.DataFrame:
        """One row per method and parameter set: medians over seeds, ratio to backprop."""
        where, values = f.where()
        frame = self.df(f"""
            SELECT method, model, method_params, any_value(primary_metric) AS metric,
                   any_value(higher_is_better) AS higher_is_better,
                   count(*) AS runs, count(DISTINCT seed) AS seeds,
                   median(primary_value) AS quality,
                   quantile_cont(primary_value, 0.75) - quantile_cont(primary_value, 0.25) AS quality_iqr,
                   median(train_energy_j) AS train_j,
                   string_agg(DISTINCT energy_source, ' | ') AS energy_source,
                   bool_or(energy_estimated) AS estimated,
                   median(train_s) AS train_s, median(co2_g) AS co2_g,
                   median(device_hours) AS device_hours,
                   median(train_energy_j / nullif(samples, 0)) AS j_per_sample,
                   median(time_to_target_s) AS time_to_target_s,
                   median(energy_to_target_j) AS energy_to_target_j
            FROM board_runs {where}
            GROUP BY method, model, method_params""", values)
        if frame.empty:
            return frame
        higher = bool(frame["higher_is_better"].iloc[0])
        frame = frame.sort_values(["quality", "train_j"], ascending=[not higher, True])
        base = frame[frame["method"] == "backprop"]
        if not base.empty:
            best = base.iloc[0]
            frame["energy_vs_backprop"] = frame["train_j"] / best["train_j"]
            frame["time_to_target_vs_backprop"] = frame["time_to_target_s"] / best["time_to_target_s"]
        frame.insert(0, "rank", range(1, len(frame) + 1))
        frame.insert(3, "key_params", [key_params(m, p) for m, p in zip(frame["method"], frame["method_params"])])
        return frame.drop(columns=["higher_is_better", "method_params"]).reset_index(drop=True)

    def points(self, f: Filters) -> pd.DataFrame:
        """One point per run (quality against energy) with its Pareto-front membership."""
        where, values = f.where()
        frame = self.df(f"""SELECT run_key, method, model, seed, primary_metric, primary_value,
                                   higher_is_better, train_energy_j, energy_estimated, energy_source
                            FROM board_runs {where}""", values)
        frame = frame.dropna(subset=["primary_value", "train_energy_j"])
        frame["pareto"] = pareto_front(frame)
        return frame

    def curves(self, run_keys: list[str]) -> pd.DataFrame:
        if not run_keys:
            return pd.DataFrame(columns=["run_key", "method", "step", "train_s", "train_energy_j", "metrics_json"])
        marks = ", ".join("?" for _ in run_keys)
        return self.df(f"""SELECT c.run_key, r.method, r.seed, c.step, c.train_s, c.train_energy_j,
                                  c.metrics_json FROM curves c JOIN board_runs r USING (run_key)
                           WHERE c.run_key IN ({marks}) ORDER BY c.run_key, c.step""", run_keys)

    def scaling(self, f: Filters) -> pd.DataFrame:
        where, values = f.where()
        return self.df(f"""SELECT run_key, method, world_size, local_batch, global_batch, device_hours,
                                  train_energy_j, samples / nullif(device_hours, 0) AS samples_per_device_hour,
                                  gradient_updates / nullif(device_hours, 0) AS updates_per_device_hour
                           FROM board_runs {where}""", values)

    def run(self, run_key: str) -> dict | None:
        frame = self.df("SELECT * FROM board_runs WHERE run_key = ?", [run_key])
        return None if frame.empty else frame.iloc[0].to_dict()

    def run_keys(self, f: Filters, limit: int = 500) -> list[str]:
        where, values = f.where()
        return self.df(f"SELECT run_key FROM board_runs {where} ORDER BY finished_at DESC LIMIT {int(limit)}",
                       values)["run_key"].tolist()


def key_params(method: str, params_json: str | None) -> str:
    """The parameters that differ from the method's declared defaults, as ``k=v`` pairs."""
    import json

    from joulebench.harness.registry import registry

    params = json.loads(params_json or "{}")
    declared = registry().methods.get(method)
    defaults = {k: p.default for k, p in declared.params.items()} if declared else {}
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if defaults.get(k, object()) != v)


def pareto_front(points: pd.DataFrame) -> list[bool]:
    """True for runs no other run beats on both quality and training energy."""
    if points.empty:
        return []
    import numpy as np

    higher = bool(points["higher_is_better"].iloc[0])
    quality = points["primary_value"].to_numpy(dtype=float) * (1.0 if higher else -1.0)
    energy = points["train_energy_j"].to_numpy(dtype=float)
    order = np.lexsort((-quality, energy))  # by energy, then best quality first
    best_so_far = np.maximum.accumulate(quality[order])
    previous = np.concatenate(([-np.inf], best_so_far[:-1]))
    front = np.zeros(len(points), dtype=bool)
    front[order] = quality[order] > previous
    return front.tolist()
