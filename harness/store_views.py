"""The store's DuckDB views over every attempt ever stored.

* ``attempts``: every attempt once (a file merged into a part and still present loose, or merged
  twice by a compaction killed before it deleted its sources, reads once: attempts are identified
  by ``(run_key, attempt_id)``; a v1 row without attempt_id is one attempt of its own).
* ``runs``: per run_key the newest ``ok`` attempt when there is one, else the newest attempt;
  newest by the attempt's ``started_at``, so an orphaned older attempt finishing late never wins.
  ``attempts`` and ``failed_attempts`` count the key's attempts.
* ``curves``: the points of the attempt ``runs`` shows, once per (run_key, attempt, split, step).
* ``leaderboard``: one row per cell (``cell_key``: the experiment minus the seed; v1 rows fall back
  to task, preset, method, model and parameters and say ``key_scheme = 'v1'``).
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

CURVES_VIEW = f"""
CREATE OR REPLACE VIEW curves AS
WITH points AS (
    SELECT *, {CURVE_ATTEMPT} AS _attempt FROM curves_all
    QUALIFY row_number() OVER (PARTITION BY run_key, {CURVE_ATTEMPT}, split, step) = 1)
SELECT p.* EXCLUDE (_attempt) FROM points p JOIN runs r ON p.run_key = r.run_key
 AND (p.attempt_id = r.attempt_id OR (p.attempt_id IS NULL AND p.run_started_at = r.started_at))
"""

LEADERBOARD_VIEW = """
CREATE OR REPLACE VIEW leaderboard AS
WITH base AS (
    SELECT *, coalesce(cell_key, 'v1:' || concat_ws('|', task, preset, method, model, method_params,
                                                   task_params)) AS cell,
           CASE WHEN cell_key IS NULL THEN 'v1' ELSE coalesce(key_scheme, 'v2') END AS scheme
    FROM runs WHERE parent_key IS NULL),
cells AS (
    SELECT cell AS cell_key, any_value(task) AS task, any_value(preset) AS preset,
           any_value(method) AS method, any_value(model) AS model,
           any_value(method_params) AS method_params, any_value(task_params) AS task_params,
           any_value(scheme) AS key_scheme, any_value(lineage_key) AS lineage_key,
           any_value(code_hash) AS code_hash, any_value(hardware_class) AS hardware_class,
           any_value(budget_steps) AS budget_steps, any_value(budget_epochs) AS budget_epochs,
           any_value(budget_seconds) AS budget_seconds,
           any_value(primary_metric) AS primary_metric,
           any_value(higher_is_better) AS higher_is_better,
           count(*) FILTER (WHERE status = 'ok') AS seeds,
           sum(failed_attempts) AS failed_attempts,
           median(primary_value) FILTER (WHERE status = 'ok') AS primary_median,
           quantile_cont(primary_value, 0.25) FILTER (WHERE status = 'ok') AS primary_q25,
           quantile_cont(primary_value, 0.75) FILTER (WHERE status = 'ok') AS primary_q75,
           median(train_energy_j) FILTER (WHERE status = 'ok') AS train_energy_j,
           string_agg(DISTINCT energy_source, ' | ') FILTER (WHERE status = 'ok') AS energy_source,
           bool_or(energy_estimated) FILTER (WHERE status = 'ok') AS energy_estimated,
           median(train_s) FILTER (WHERE status = 'ok') AS train_s,
           median(co2_g) FILTER (WHERE status = 'ok') AS co2_g,
           median(device_hours) FILTER (WHERE status = 'ok') AS device_hours,
           median(train_energy_j / nullif(samples, 0)) FILTER (WHERE status = 'ok') AS joules_per_sample,
           median(time_to_target_s) FILTER (WHERE status = 'ok') AS time_to_target_s,
           median(energy_to_target_j) FILTER (WHERE status = 'ok') AS energy_to_target_j,
           max(finished_at) AS last_finished_at
    FROM base GROUP BY cell HAVING count(*) FILTER (WHERE status = 'ok') > 0)
SELECT *, lineage_key IS NULL OR code_hash IS NOT DISTINCT FROM
          arg_max(code_hash, last_finished_at) OVER (PARTITION BY lineage_key) AS is_latest_code
FROM cells
"""

VIEWS = (ATTEMPTS_VIEW, RUNS_VIEW, CURVES_VIEW, LEADERBOARD_VIEW)
