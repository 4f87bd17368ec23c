"""The store's DuckDB views over every attempt ever stored.

* ``attempts``: every attempt once (a file merged into a part and still present loose, or merged
  twice by a compaction killed before it deleted its sources, reads once: attempts are identified
  by ``(run_key, attempt_id)``; a v1 row without attempt_id is one attempt of its own).
* ``runs``: per run_key the newest ``ok`` attempt when there is one, else the newest attempt;
  newest by the attempt's ``started_at``, so an orphaned older attempt finishing late never wins.
  ``attempts`` and ``failed_attempts`` count the key's attempts.
* ``curves``: the points of the attempt ``runs`` shows, once per (run_key, attempt, split, step).
* ``leaderboard``: one row per cell and energy kind (``cell_key``: the experiment minus the seed;
  v1 rows fall back to task, preset, method, model and parameters and say ``key_scheme = 'v1'``;
  ``estimated``: estimated and measured joules never share a median), from ``cells_query``,
  which the leaderboard app asks of its own copy of the rows.
"""

from __future__ import annotations

ATTEMPT_ID = "coalesce(attempt_id, 'v1:' || coalesce(CAST(started_at AS VARCHAR), '') || ':' || " \
             "coalesce(CAST(finished_at AS VARCHAR), ''))"
CURVE_ATTEMPT = "coalesce(attempt_id, 'v1:' || coalesce(CAST(run_started_at AS VARCHAR), ''))"

ATTEMPTS_VIEW = f"""
CREATE OR REPLACE VIEW attempts AS
SELECT * REPLACE (CASE WHEN cell_key IS NULL THEN 'v1' ELSE coalesce(key_scheme, 'v2') END AS key_scheme)
FROM runs_all
QUALIFY row_number() OVER (PARTITION BY run_key, {ATTEMPT_ID} ORDER BY finished_at DESC NULLS LAST) = 1
"""

RUNS_VIEW = """
CREATE OR REPLACE VIEW runs AS
SELECT *, count(*) OVER (PARTITION BY run_key) AS attempts,
       count(*) FILTER (WHERE status IS DISTINCT FROM 'ok') OVER (PARTITION BY run_key) AS failed_attempts
FROM attempts
QUALIFY row_number() OVER (PARTITION BY run_key ORDER BY status IS NOT DISTINCT FROM 'ok' DESC,
                           started_at DESC NULLS LAST, finished_at DESC NULLS LAST) = 1
"""

def curve_points(curves: str, runs: str) -> str:
    """The points of the attempt ``runs`` shows, once per (run_key, attempt, split, step): the
    ``curves`` view is this over ``curves_all`` and ``runs``; the leaderboard app asks it of the
    curves of a few runs and its own copy of the runs."""
    return f"""
WITH points AS (
    SELECT *, {CURVE_ATTEMPT} AS _attempt FROM {curves}
    QUALIFY row_number() OVER (PARTITION BY run_key, {CURVE_ATTEMPT}, split, step) = 1)
SELECT p.* EXCLUDE (_attempt) FROM points p JOIN {runs} r ON p.run_key = r.run_key
 AND (p.attempt_id = r.attempt_id OR (p.attempt_id IS NULL AND p.run_started_at = r.started_at))
"""


CURVES_VIEW = "CREATE OR REPLACE VIEW curves AS" + curve_points("curves_all", "runs")

ESTIMATED = "coalesce(energy_estimated, true)"
"""A row's energy kind: estimated unless it says measured (a row that does not say counts as
estimated). Cells are split by it: estimated and measured joules never share a median."""

CELL = "coalesce(cell_key, 'v1:' || concat_ws('|', task, preset, method, model, method_params, task_params))"
"""A row's cell: its ``cell_key`` (the experiment minus the seed); v1 rows by their configuration."""


def cells_query(source: str, split: tuple[str, ...] = ()) -> str:
    """One row per cell of ``source`` (and per value of the ``split`` columns): the medians over
    the rows whose ``chosen`` column is true, the failed attempts of every row, and
    ``is_latest_code`` (the cell carries the code of its lineage's newest cell).

    The one definition of a cell: the ``leaderboard`` view is this over the ``runs`` view; the
    leaderboard app asks it of its own incrementally read copy of the same rows, split by energy
    kind (estimated and measured joules never share a median). ``source`` is a relation with the
    ``runs`` view's columns plus ``chosen``."""
    by = "".join(f", {c}" for c in split)
    return f"""
WITH base AS (
    SELECT *, {CELL} AS cell, CASE WHEN cell_key IS NULL THEN 'v1' ELSE coalesce(key_scheme, 'v2') END AS scheme
    FROM {source}),
cells AS (
    SELECT cell AS cell_key{by}, any_value(task) AS task, any_value(preset) AS preset,
           any_value(method) AS method, any_value(model) AS model,
           any_value(method_params) AS method_params, any_value(task_params) AS task_params,
           any_value(scheme) AS key_scheme, any_value(lineage_key) AS lineage_key,
           arg_max(code_hash, finished_at) AS code_hash,
           any_value(coalesce(nullif(hardware_class, ''), nullif(gpu_model, ''), nullif(cpu_model, ''), device))
               AS hardware_class,
           any_value(budget_steps) AS budget_steps, any_value(budget_epochs) AS budget_epochs,
           any_value(budget_seconds) AS budget_seconds,
           any_value(primary_metric) AS primary_metric,
           any_value(higher_is_better) AS higher_is_better, any_value(target) AS target,
           count(*) FILTER (WHERE chosen) AS runs,
           count(DISTINCT seed) FILTER (WHERE chosen) AS seeds,
           coalesce(sum(failed_attempts), 0) AS failed_attempts,
           median(primary_value) FILTER (WHERE chosen) AS primary_median,
           quantile_cont(primary_value, 0.25) FILTER (WHERE chosen) AS primary_q25,
           quantile_cont(primary_value, 0.75) FILTER (WHERE chosen) AS primary_q75,
           median(train_energy_j) FILTER (WHERE chosen) AS train_energy_j,
           string_agg(DISTINCT energy_source, ' | ') FILTER (WHERE chosen) AS energy_source,
           bool_or({ESTIMATED}) FILTER (WHERE chosen) AS energy_estimated,
           median(train_s) FILTER (WHERE chosen) AS train_s,
           median(co2_g) FILTER (WHERE chosen) AS co2_g,
           median(device_hours) FILTER (WHERE chosen) AS device_hours,
           median(train_energy_j / nullif(samples, 0)) FILTER (WHERE chosen) AS joules_per_sample,
           avg(CASE WHEN reached_target THEN 1.0 WHEN reached_target IS NOT NULL THEN 0.0 END)
               FILTER (WHERE chosen) AS reached,
           median(time_to_target_s) FILTER (WHERE chosen) AS time_to_target_s,
           median(energy_to_target_j) FILTER (WHERE chosen) AS energy_to_target_j,
           max(finished_at) AS last_finished_at
    FROM base GROUP BY cell{by} HAVING count(*) FILTER (WHERE chosen) > 0)
SELECT *, lineage_key IS NULL OR code_hash IS NOT DISTINCT FROM
          arg_max(code_hash, last_finished_at) OVER (PARTITION BY lineage_key{by}) AS is_latest_code
FROM cells
"""


LEADERBOARD_VIEW = "CREATE OR REPLACE VIEW leaderboard AS" + cells_query(
    f"(SELECT *, status = 'ok' AS chosen, {ESTIMATED} AS estimated FROM runs WHERE parent_key IS NULL)",
    split=("estimated",))

VIEWS = (ATTEMPTS_VIEW, RUNS_VIEW, CURVES_VIEW, LEADERBOARD_VIEW)
