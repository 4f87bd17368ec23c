"""Energy- and time-to-target scoring with AlgoPerf-style performance profiles.

Per workload and entry (a method with its parameters) the cost is the median over the suite's
seeds of the train energy (or train seconds) spent until the validation metric first reached the
workload's target; a seed that never reached it within the cap, failed, or was not run counts as
infinite, so an entry needs more than half of its seeds to reach the target to get a finite cost.
Across workloads, an entry's performance ratio on a workload is its cost over the best entry's;
its profile rho(tau) is the share of workloads with ratio <= tau, and its score is the area under
rho from 1 to ``tau_max`` divided by ``tau_max - 1`` (1: best everywhere; 0: never within
``tau_max`` of the best). Costs are compared only within one hardware class and, for energy,
only between rows whose energy is of the same kind (estimated or measured).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from joulebench.harness.cells import annotate
from joulebench.harness.params import SpecError
from joulebench.harness.suite import Suite, TargetSet, Workload, stale_lines, task_code

INF = math.inf
QUANTITY_COLUMN = {"energy": "energy_to_target_j", "time": "time_to_target_s"}


# -- from rows to costs ---------------------------------------------------------------------------
def median_cost(values: list[float], seeds: int) -> float:
    """Median over ``seeds`` trials, missing ones counted as not reaching the target."""
    padded = sorted(list(values) + [INF] * max(0, seeds - len(values)))
    if not padded:
        return INF
    mid = len(padded) // 2
    if len(padded) % 2:
        return padded[mid]
    low, high = padded[mid - 1], padded[mid]
    return INF if math.isinf(high) else (low + high) / 2


def workload_costs(trials: pd.DataFrame, seeds: dict[str, int]) -> pd.DataFrame:
    """Trials (``group, workload, entry, seed, energy_to_target_j, time_to_target_s``; NaN or inf
    where the target was not reached) → one cost per group, workload and entry."""
    rows = []
    for (group, workload, entry), g in trials.groupby(["group", "workload", "entry"], sort=True):
        row = {"group": group, "workload": workload, "entry": entry,
               "seeds_run": int(g["seed"].nunique()), "seeds_reached": 0}
        for quantity, column in QUANTITY_COLUMN.items():
            values = pd.to_numeric(g[column], errors="coerce").replace([np.nan], INF).tolist()
            row[quantity] = median_cost(values, seeds[workload])
        row["seeds_reached"] = int(np.isfinite(pd.to_numeric(g["time_to_target_s"], errors="coerce")).sum())
        rows.append(row)
    return pd.DataFrame(rows)


# -- profiles ---------------------------------------------------------------------------------------
def ratios(costs: pd.DataFrame) -> pd.DataFrame:
    """workload × entry costs → performance ratios (inf where an entry or every entry failed)."""
    best = costs.min(axis=1)
    out = costs.div(best.where(np.isfinite(best) & (best > 0)), axis=0)
    return out.where(np.isfinite(out), INF)


def profile(ratio: pd.Series, taus: np.ndarray) -> np.ndarray:
    """rho(tau): the share of workloads whose ratio is at most tau."""
    values = ratio.to_numpy(dtype=float)
    return np.array([(values <= tau).sum() / len(values) for tau in taus])


def score(ratio: pd.Series, tau_max: float) -> float:
    """Normalised area under rho from 1 to tau_max, exactly (rho is a step function): a workload
    with ratio r <= tau_max adds (tau_max - r) / (tau_max - 1) / n."""
    values = ratio.to_numpy(dtype=float)
    inside = values[values <= tau_max]
    return float(np.sum(tau_max - inside) / (tau_max - 1) / len(values))


@dataclass
class Scores:
    """Everything ``joulebench score`` shows for one comparable group (hardware class and energy kind)."""

    group: str
    quantity: str
    costs: pd.DataFrame
    """workload × entry."""
    ratios: pd.DataFrame
    scores: pd.Series
    tau_max: float


def score_group(costs: pd.DataFrame, group: str, quantity: str, tau_max: float,
                workloads: list[str]) -> Scores:
    table = costs[costs["group"] == group].pivot(index="workload", columns="entry", values=quantity)
    table = table.reindex(workloads).fillna(INF)  # a workload nobody ran counts for nobody
    r = ratios(table)
    scores = pd.Series({e: score(r[e], tau_max) for e in r.columns}, name=f"{quantity} score")
    return Scores(group, quantity, table, r, scores.sort_values(ascending=False), tau_max)


# -- from a store -------------------------------------------------------------------------------------
def _matches(row: dict, w: Workload, device: str) -> bool:
    if row["task"] != w.task or row["preset"] != w.preset or row.get("device") != device:
        return False
    params = json.loads(row.get("task_params") or "{}")
    if any(str(params.get(k)) != str(v) for k, v in w.task_params.items()):
        return False
    for name, value in w.budget.model_dump().items():
        stored = row.get(f"budget_{name}")
        stored = None if stored is None or (isinstance(stored, float) and math.isnan(stored)) else stored
        if (value is None) != (stored is None) or (value is not None and float(value) != float(stored)):
            return False
    return int(row.get("world_size") or 1) == 1


def first_reach(points: pd.DataFrame, metric: str, target: float, higher: bool) -> tuple[float, float]:
    """(train seconds, train joules) at the first validation point that meets the target."""
    for _, p in points.sort_values("step").iterrows():
        value = json.loads(p["metrics_json"]).get(metric)
        if value is not None and (value >= target if higher else value <= target):
            joules = p["train_energy_j"]
            return float(p["train_s"]), (float(joules) if joules is not None and joules > 0 else math.nan)
    return INF, INF


def entry_labels(frame: pd.DataFrame) -> pd.Series:
    """``method``, or ``method (k=v, …)`` where one method ran with several parameter sets on one
    workload. Parameters are compared within a workload: a preset's own defaults (backprop's lr
    differs per task) do not split a method into several entries."""
    labels = {}
    for (workload, method), g in frame.groupby(["workload", "method"]):
        sets = {mp: json.loads(mp) for mp in g["method_params"].unique()}
        varied = sorted({k for p in sets.values() for k in p
                         if len({json.dumps(q.get(k), sort_keys=True) for q in sets.values()}) > 1})
        for mp, params in sets.items():
            parts = ", ".join(f"{k}={params.get(k)}" for k in varied)
            labels[(workload, method, mp)] = f"{method} ({parts})" if parts else method
    return pd.Series([labels[k] for k in zip(frame["workload"], frame["method"], frame["method_params"])],
                     index=frame.index)


def suite_trials(store, suite: Suite) -> pd.DataFrame:
    """One line per stored run of a suite workload: its entry, cell, group and costs to target.

    Where an entry has rows of several code versions (cells) on a workload, the newest is scored.
    """
    runs = store.execute("SELECT * FROM runs WHERE parent_key IS NULL AND preset IN (SELECT unnest(?))",
                         [sorted({w.preset for w in suite.workloads})]).df()
    if runs.empty:
        return pd.DataFrame()
    records = runs.to_dict("records")
    picked = []
    for w in suite.workloads:
        seeds = set(suite.seeds_of(w))
        for i, row in enumerate(records):
            if row["seed"] in seeds and _matches(row, w, suite.device):
                picked.append((w, i))
    if not picked:
        return pd.DataFrame()
    frame = annotate(runs.iloc[[i for _, i in picked]].reset_index(drop=True))
    frame["workload"] = [w.name for w, _ in picked]
    frame["target"] = [w.target for w, _ in picked]
    frame["entry"] = entry_labels(frame)
    newest = frame.groupby(["workload", "entry", "cell"])["finished_at"].transform("max")
    frame["cell_newest"] = newest
    keep = frame.groupby(["workload", "entry", "hw"])["cell_newest"].transform("max") == frame["cell_newest"]
    frame = frame[keep].reset_index(drop=True)
    return _with_costs(store, frame)


def _with_costs(store, frame: pd.DataFrame) -> pd.DataFrame:
    curves = store.execute("SELECT run_key, step, train_s, train_energy_j, metrics_json FROM curves "
                           "WHERE split = 'val' AND run_key IN (SELECT unnest(?))",
                           [frame["run_key"].tolist()]).df()
    by_key = dict(tuple(curves.groupby("run_key"))) if len(curves) else {}
    times, joules = [], []
    for _, row in frame.iterrows():
        points = by_key.get(row["run_key"])
        if row["status"] != "ok" or points is None:
            t, j = INF, INF
        else:
            t, j = first_reach(points, row["primary_metric"], row["target"], bool(row["higher_is_better"]))
        times.append(t)
        joules.append(j)
    frame["time_to_target_s"], frame["energy_to_target_j"] = times, joules
    frame["group"] = frame["hw"]
    return frame


def score_suite(store, suite: Suite) -> tuple[pd.DataFrame, list[Scores]]:
    """The trials and, per hardware class (and energy kind for energy), the scores."""
    suite.require_targets()
    trials = suite_trials(store, suite)
    if trials.empty:
        return trials, []
    seeds = {w.name: len(suite.seeds_of(w)) for w in suite.workloads}
    names = [w.name for w in suite.workloads]
    out = []
    for quantity in suite.scoring.quantities:
        frame = trials.copy()
        if quantity == "energy":  # estimated and measured energy are never compared
            frame["group"] = frame["hw"] + " / energy " + frame["energy_kind"]
        costs = workload_costs(frame, seeds)
        for group in sorted(costs["group"].unique()):
            out.append(score_group(costs, group, quantity, suite.scoring.tau_max, names))
    return trials, out


# -- output ---------------------------------------------------------------------------------------------
def _fmt(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "not reached" if math.isinf(value) else f"{value:,.1f} {unit}"


def format_scores(suite: Suite, results: list[Scores], trials: pd.DataFrame) -> str:
    if not results:
        return f"suite {suite.label}: no stored runs of its workloads"
    lines = []
    unit = {"energy": "J", "time": "s"}
    for s in results:
        estimated = "estimate" in s.group and s.quantity == "energy"
        lines.append(f"\n{s.quantity}-to-target, {s.group}"
                     + (" (codecarbon estimate: proportional to time here, not measured)" if estimated else ""))
        head = ["entry", f"{s.quantity} score"] + list(s.costs.index)
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for entry, value in s.scores.items():
            cells = [_fmt(s.costs.loc[w, entry], unit[s.quantity])
                     + ("" if math.isinf(s.ratios.loc[w, entry]) else f" ({s.ratios.loc[w, entry]:.2f}x)")
                     for w in s.costs.index]
            lines.append("| " + " | ".join([entry, f"{value:.3f}"] + cells) + " |")
    seeds = trials.groupby(["workload", "entry"]).agg(run=("seed", "nunique"),
                                                      reached=("time_to_target_s", lambda v: int(np.isfinite(v).sum())))
    short = [f"{e} on {w}: {r.reached}/{r.run} seeds reached" for (w, e), r in seeds.iterrows()
             if r.reached < r.run]
    want = {w.name: len(suite.seeds_of(w)) for w in suite.workloads}
    short += [f"{e} on {w}: {r.run} of {want[w]} seeds stored" for (w, e), r in seeds.iterrows() if r.run < want[w]]
    short += absent_lines(suite, trials)
    short += [f"STALE: {line}" for line in stale_lines(suite)]
    head = (f"suite {suite.label}: score = area under the performance profile up to tau_max "
            f"{suite.scoring.tau_max:g}, normalised (1 = best on every workload); cost = median over seeds "
            "of train energy/seconds until the validation target")
    return "\n".join([head] + lines + ([""] + short if short else []))


def absent_lines(suite: Suite, trials: pd.DataFrame) -> list[str]:
    """Why an entry has no run on a workload: its method cannot train it (the registry's reason),
    or nothing is stored yet. Either way the workload counts as not reached."""
    lines = []
    for entry, g in trials.groupby("entry"):
        try:
            reasons = suite.cannot_train(g["method"].iloc[0])
        except SpecError:  # rows of a method this process has no plugin for
            reasons = {}
        for w in suite.workloads:
            if w.name not in set(g["workload"]):
                why = reasons.get(w.name, "no run stored")
                lines.append(f"{entry} on {w.name}: {why} (not reached)")
    return lines


def plot_profiles(results: list[Scores], out_stem: Path) -> list[Path]:
    """Performance profiles (one panel per quantity and group) as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.2), squeeze=False)
    for ax, s in zip(axes[0], results):
        taus = np.linspace(1.0, s.tau_max, 400)
        for entry, value in s.scores.items():
            ax.step(taus, profile(s.ratios[entry], taus), where="post", label=f"{entry} ({value:.3f})")
        ax.set_xlim(1.0, s.tau_max)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"τ (× best {s.quantity}-to-target)")
        ax.set_ylabel("ρ(τ): share of workloads")
        ax.set_title(f"{s.quantity}: {s.group}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center right", title="entry (score)", title_fontsize=8, framealpha=0.9)
    fig.tight_layout()
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths


# -- calibration: targets measured from the baseline's stored runs ---------------------------------------
@dataclass
class Calibration:
    """One workload's measured target and what it was measured on."""

    workload: str
    metric: str
    higher_is_better: bool
    target: float
    target_set: TargetSet


def best_value(points: pd.DataFrame, metric: str, higher: bool) -> float:
    """The best validation value of ``metric`` over a run's validation points (all within its cap)."""
    values = [json.loads(m).get(metric) for m in points["metrics_json"]]
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        raise SpecError(f"no validation value of {metric!r} stored")
    return max(values) if higher else min(values)


def calibrate(store, suite: Suite, baseline: str, today: datetime.date | None = None) -> list[Calibration]:
    """Every workload's target by the suite's ``target_rule`` from the baseline's ok runs of the
    runs the suite asks of it *on the current code* (their run keys; an older code's rows are
    another key and do not count), with the task's current code hash. One-line errors where the
    suite names no rule or a seed's run is missing."""
    from joulebench.harness.spec import resolve

    if suite.target_rule is None:
        raise SpecError(f"suite {suite.label} names no target_rule: its targets are typed, not calibrated")
    today = today or datetime.datetime.now(datetime.UTC).date()
    out = []
    for w in suite.workloads:
        keys = {resolve(spec).run_key: spec.seed for ww, spec in suite.run_specs(baseline) if ww.name == w.name}
        rows = store.execute("SELECT run_key, primary_metric, higher_is_better FROM runs WHERE status = 'ok' "
                             "AND parent_key IS NULL AND run_key IN (SELECT unnest(?))", [list(keys)]).df()
        missing = sorted(seed for key, seed in keys.items() if key not in set(rows["run_key"]))
        if missing:
            raise SpecError(f"suite {suite.label}: workload {w.name!r}: no ok run of {baseline} on the current "
                            f"code for seeds {missing}: run `joulebench suite run {suite.name} --method {baseline}`")
        curves = store.execute("SELECT run_key, metrics_json FROM curves WHERE split = 'val' "
                               "AND run_key IN (SELECT unnest(?))", [list(keys)]).df()
        metric, higher = rows["primary_metric"].iloc[0], bool(rows["higher_is_better"].iloc[0])
        by_seed = {keys[k]: best_value(curves[curves["run_key"] == k], metric, higher) for k in keys}
        seeds = tuple(suite.seeds_of(w))
        best = tuple(by_seed[seed] for seed in seeds)
        out.append(Calibration(w.name, metric, higher, suite.target_rule.apply(list(best)),
                               TargetSet(baseline=baseline, seeds=seeds, best=best,
                                         task_code=task_code(w.task), date=today)))
    return out


def format_calibration(suite: Suite, calibrations: list[Calibration]) -> str:
    rule = suite.target_rule
    lines = [f"suite {suite.label}: targets by {rule.value} ({rule.describe()})",
             "| workload | metric | best per seed | target | task code |", "|---|---|---|---|---|"]
    for c in calibrations:
        ts = c.target_set
        best = ", ".join(f"{seed}: {v:.6g}" for seed, v in zip(ts.seeds, ts.best))
        better = "higher" if c.higher_is_better else "lower"
        lines.append(f"| {c.workload} | val {c.metric} ({better} is better) | {best} | {c.target:.6g} | "
                     f"{ts.task_code} |")
    return "\n".join(lines)


def write_targets(text: str, calibrations: list[Calibration]) -> str:
    """The suite file's text with each workload's ``target`` and ``target_set`` after its name line
    (comments kept). Refuses a file that has targets already: a suite's targets never change."""
    if re.search(r"^\s*target\s*=", text, flags=re.MULTILINE):
        raise SpecError("the suite file has targets already: a suite version's targets never change; "
                        "make a new version (a new file) and calibrate that")
    for c in calibrations:
        ts = c.target_set
        line = re.compile(rf'^(name\s*=\s*"{re.escape(c.workload)}"[^\n]*\n)', flags=re.MULTILINE)
        best = ", ".join(repr(v) for v in ts.best)
        record = (f"target = {c.target!r}  # val {c.metric}: {ts.baseline}'s best per seed, median\n"
                  f'target_set = {{ baseline = "{ts.baseline}", seeds = {list(ts.seeds)}, best = [{best}], '
                  f'task_code = "{ts.task_code}", date = {ts.date.isoformat()} }}\n')
        text, n = line.subn(lambda m, record=record: m.group(1) + record, text, count=1)
        if n != 1:
            raise SpecError(f"the suite file has no workload line name = \"{c.workload}\"")
    return text
