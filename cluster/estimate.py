"""A campaign's cost before it runs: train seconds, joules, device-hours and CO2 per planned run.

The forecast has two parts, both fitted on stored ``ok`` rows of the same hardware class:

1. **Train seconds** from the most similar stored configuration, as seconds per training sample
   times the samples the run's budget plans. Similarity levels, closest first: the same
   configuration (any seed, any code version); the same task, preset, model and method with other
   method parameters; the same task, preset and model with another method; the same task, preset
   and method with another model. Where none of the close levels holds, a **workload × method
   factor model** fitted on the same hardware class gives the seconds per sample:
   log(s/sample) = u[workload] + v[method], a workload being task, preset and task parameters.
   It predicts a pair only where the data identify it: the workload and the method are connected
   in the graph whose edges are the stored (workload, method) pairs, as in a grid campaign (each
   method ran on several workloads, each workload with several methods). The factor model is
   itself validated leave-one-cell-out on the history and held back when its median error is above
   ``FACTOR_MAX_ERROR`` (50 %) or nothing validates it. A run with no level and no identified pair
   (or only a held-back factor basis) is reported as "no basis", never guessed.
2. **Joules** from the energy-scaling seed's shape, energy = a · device-hours (train), where ``a``
   (J per device-hour) may depend on samples and updates per device-hour. Both a constant ``a``
   and ``a`` linear in those two rates are fitted; the one with the smaller leave-one-cell-out
   error is used and named in the output. Where energy is a codecarbon estimate (these machines)
   ``a`` is close to a constant power by construction: the energy forecast then holds because
   estimated energy is proportional to time. Estimated and measured joules never share a fit
   (``ENERGY_KINDS``, the store's ``ESTIMATED``): a plan forecasts the measured kind where the
   class has metered rows, else the estimated kind, and says which; ``--validate`` forecasts each
   left-out cell's joules from the other cells' rows of its own kind.

What the factor model misses, and what was tried (the demo store of 2026-12-02, 64 runs, quiet
``-j 2``): its misses are the F³ and DFA cells on the two LTSF MLP workloads (29–42 %). In that
store, per update, DFA cost 1.42× backprop on the tiny MLP and 1.14× on the small one, F³ 1.17× and
1.49× (seeds within a cell agree within 2–9 % on the small MLP): no model in which a method's
effect is independent of the workload follows both, and with two workloads per method none with an
interaction is identified. A fixed per-run cost inside training is ~4 ms (the 0-update
seasonal-naive runs), 4 % of a 0.1 s tiny run: not the cause. Tried, leave-one-cell-out over the
six LTSF-MLP cells (median): this least-squares fit 29.2 %; a robust (soft-L1) fit 29.2 %; an
additive per-update cost (s/update = c[workload] + o[method]) 30.9 %, chosen per fold by its own
inner validation 29.2 %; a global fixed seconds per run plus per-update factors 27.8 % (93 % on
small DFA: the fitted 60 ms absorbs tiny DFA's excess); each method's ratio to backprop (median over
the other workloads) 20.6 % — but on an independent grid (cpu-v1, backprop/OIALR/prune × 5
workloads, 15 cells; backprop ran quiet there, the others loaded) that ratio model misses by 57.2 %
against this model's 53.8 %. None validated better on both, so none was built.

The ratios themselves did not reproduce: a second quiet ``-j 2`` demo campaign (same code, fresh
store, 64/64 ok in 63 s) had DFA at 0.86× backprop on the small MLP and 0.72× on the tiny one, and
validated at 22.4 % (train seconds) and 19.1 % (joules). Identical single-thread runs alone on this
machine drift by 1.2–1.8× (max/min) in blocks of seconds to tens of seconds, and a matmul speed
probe does not follow it (correlation 0.14–0.20). Run cell by cell, a drift lands on all seeds of
one cell and reads as a cell effect. What brought it under 20 % is measurement design, not the
model: five seeds per LTSF cell in the demo, and repeats interleaved (every cell's i-th seed before any cell's (i+1)-th,
``campaign.expand_runs``). Quiet ``-j 2`` demo campaigns, leave-one-cell-out median error of
train seconds (2026-12-03, ``benchmarks/forecast_error.py`` and by hand): five seeds, interleaved
2.6, 5.0, 6.2, 6.3, 7.4, 7.7, 7.9, 10.8, 14.3, 19.4 % (joules 8.9–19.9 %); five seeds, cell by
cell 7.7, 8.9, 9.6, 9.6, 13.6, 44.1 %; three seeds, interleaved 2.1, 5.5, 8.4, 11.0, 13.2, 23.2 %;
three seeds, cell by cell 8.9, 9.4, 17.0, 20.4 % (2026-12-02: 15.7, 21.3, 22.4, 23.5 %).
The two pruning cells forecast from each other ("other method parameters") stay at 13–22 %:
structured pruning is consistently ~18 % faster than unstructured, which that level ignores.

``validate`` leaves each stored cell (configuration minus seed) out in turn, forecasts it from the
rest, and reports the median absolute percentage error of train seconds and joules.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from joulebench.harness.cells import annotate, hardware_class
from joulebench.harness.spec import ResolvedSpec
from joulebench.harness.store_views import ESTIMATED

CONFIG = ["task", "preset", "method", "method_params", "task_params", "budget_steps",
          "budget_epochs", "budget_seconds", "world_size"]
"""A configuration: what a cell is, minus the code version (rows of any code version inform a
forecast). The model is named by the task parameters; the stored ``model`` column is the task's
display name of it (``mlp+cinn``), which a planned run does not have."""
LEVELS = (("same configuration", CONFIG),
          ("other budget", ["task", "preset", "method", "method_params", "task_params", "world_size"]),
          ("other method parameters", ["task", "preset", "method", "task_params", "world_size"]))
"""Similarity levels a forecast is made from, closest first."""
FACTORS = "workload × method factors"
"""The basis label of a forecast from the factor model (``CostFactors``)."""
FACTOR_MAX_ERROR = 0.5
"""The factor basis is held back (its runs are "no basis") when its own leave-one-cell-out median
error of train seconds on the stored history is above this, or when no stored cell validates it:
a forecast that misses by more than half is a guess, and the forecast never guesses silently."""
GUESSES = (("other method", ["task", "preset", "task_params"]),
           ("other model", ["task", "preset", "method"]))
"""Looser levels that are *not* a basis: on the demo campaign, seconds per sample moved by 40 % to
7x between models and between methods on one model (``--validate`` prints what they would have
given), so a run whose nearest stored run is this far away is reported as "no basis"."""
COLUMNS = ("run_key task preset model method method_params task_params budget_steps budget_epochs "
           "budget_seconds world_size device samples epochs gradient_updates train_s wall_s "
           "train_energy_j total_energy_j device_hours cpu_model gpu_model hardware_class "
           "energy_estimated co2_total_g carbon_intensity_g_per_kwh spec_json code_hash cell_key "
           "train_cpu_s host_load_1m cpu_count").split()


@dataclass
class Forecast:
    label: str
    basis: str | None
    """Which similarity level the time came from, or None: no basis."""
    train_s: float | None = None
    energy_j: float | None = None
    device_hours: float | None = None
    co2_g: float | None = None


ENERGY_KINDS = ("measured", "estimated")
"""A row's joules are read off a sensor (RAPL, NVML) or estimated (codecarbon): the two are never
fitted together, as the store's views never share a median between them (``store_views.ESTIMATED``)."""


def energy_kind(rows: pd.DataFrame) -> str:
    """The kind a forecast on these rows gives: measured where any row was metered (the class has a
    sensor), else estimated. A row without the column is an estimate, as ``ESTIMATED`` says."""
    return "measured" if len(of_kind(rows, "measured")) else "estimated"


def of_kind(rows: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows whose joules are of this kind (``ENERGY_KINDS``)."""
    estimated = (rows["estimated"].fillna(True).astype(bool) if "estimated" in rows
                 else pd.Series(True, index=rows.index))
    return rows[estimated if kind == "estimated" else ~estimated]


@dataclass
class EnergyModel:
    """energy_J = a · train device-hours, a = c0 (+ c1 · samples/dh + c2 · updates/dh), fitted on
    rows of one energy kind only."""

    coef: np.ndarray
    linear: bool
    kind: str = "estimated"

    def per_device_hour(self, samples_per_dh: float, updates_per_dh: float) -> float:
        if not self.linear:
            return float(self.coef[0])
        return float(self.coef @ np.array([1.0, samples_per_dh, updates_per_dh]))

    def describe(self) -> str:
        if not self.linear:
            return (f"{self.kind} energy = a · device-hours, a = {self.coef[0]:,.0f} J per device-hour "
                    "(constant)")
        c0, c1, c2 = self.coef
        return (f"{self.kind} energy = a · device-hours, a = {c0:,.0f} + {c1:.4g}·samples/dh + "
                f"{c2:.4g}·updates/dh J per device-hour")


@dataclass
class FactorCheck:
    """The factor model's own leave-one-cell-out validation on a history, and whether it is used."""

    error: float | None
    """Median absolute percentage error of train seconds over the cells it forecast once left
    out; None when it could forecast none of them."""
    cells: int
    max_error: float = FACTOR_MAX_ERROR

    @property
    def held_back(self) -> bool:
        return self.error is None or self.error > self.max_error

    def describe(self) -> str:
        if self.error is None:
            return "factor basis held back: no stored cell validates it (none is identified once left out)"
        if math.isinf(self.max_error):
            verdict = "used (no threshold: --factor-max-error inf)"
        elif self.held_back:
            verdict = f"held back (above {self.max_error:.0%})"
        else:
            verdict = f"used (at most {self.max_error:.0%})"
        return (f"factor basis {verdict}: leave-one-cell-out median error {self.error:.1%} "
                f"over {self.cells} cells")


class CostFactors:
    """log(train seconds per sample) = u[workload] + v[method], least squares over stored cells.

    The fit is unique only up to shifting u and v against each other within each connected
    component of the workload–method graph; a prediction u[w] + v[m] is unique exactly when w and
    m lie in one component, so only those pairs are predicted (the minimum-norm solution gives it).
    """

    def __init__(self, rows: pd.DataFrame) -> None:
        trained = rows[rows["samples"] > 0]
        cells = (trained.assign(_w=workload_names(trained),
                                _y=np.log(trained["train_s"] / trained["samples"]))
                 .groupby(["_w", "method"])["_y"].median())
        self.pairs = len(cells)
        self.workloads = sorted({w for w, _ in cells.index})
        self.methods = sorted({m for _, m in cells.index})
        self.component = _components(list(cells.index))
        self.effect: dict[str, float] = {}
        if not len(cells):
            return
        names = [f"w:{w}" for w in self.workloads] + [f"m:{m}" for m in self.methods]
        col = {n: i for i, n in enumerate(names)}
        x = np.zeros((len(cells), len(names)))
        for i, (w, m) in enumerate(cells.index):
            x[i, col[f"w:{w}"]] = x[i, col[f"m:{m}"]] = 1.0
        coef, *_ = np.linalg.lstsq(x, cells.to_numpy(dtype=float), rcond=None)
        self.effect = dict(zip(names, coef))

    def seconds_per_sample(self, workload: str, method: str) -> float | None:
        """exp(u[workload] + v[method]) where the pair is identified, else None."""
        w, m = f"w:{workload}", f"m:{method}"
        if w not in self.component or m not in self.component or self.component[w] != self.component[m]:
            return None
        return float(np.exp(self.effect[w] + self.effect[m]))


def workload_names(rows: pd.DataFrame) -> list[str]:
    """A workload for the factor model: task, preset and task parameters (the data and the model)."""
    return [f"{t}/{p} {tp}" for t, p, tp in zip(rows["task"], rows["preset"], rows["task_params"])]


def _components(pairs: list[tuple[str, str]]) -> dict[str, int]:
    """Connected components of the bipartite workload–method graph (node → component id)."""
    parent: dict[str, str] = {}

    def root(n: str) -> str:
        while parent.setdefault(n, n) != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for w, m in pairs:
        parent[root(f"w:{w}")] = root(f"m:{m}")
    roots = sorted({root(n) for n in parent})
    return {n: roots.index(root(n)) for n in parent}


# -- history ----------------------------------------------------------------------------------------
def history(store, hw: str | None = None) -> pd.DataFrame:
    """Stored ok rows (not search trials) with the columns a forecast uses, of one hardware class."""
    known = {r[0] for r in store.execute("DESCRIBE runs").fetchall()}
    cols = ", ".join(c for c in COLUMNS if c in known)
    kind = f", {ESTIMATED} AS estimated" if "energy_estimated" in known else ", true AS estimated"
    rows = store.execute(f"SELECT {cols}{kind} FROM runs WHERE status = 'ok' AND parent_key IS NULL").df()
    if rows.empty:
        return rows
    rows = annotate(rows)
    rows = rows[rows["train_s"].notna() & (rows["train_s"] > 0)]
    if hw is not None:
        rows = rows[rows["hw"] == hw]
    for c in ("budget_steps", "budget_epochs", "budget_seconds"):
        rows[c] = pd.to_numeric(rows[c], errors="coerce")
    rows["train_dh"] = rows["world_size"] * rows["train_s"] / 3600.0
    return rows.reset_index(drop=True)


def spec_features(spec: ResolvedSpec) -> dict[str, Any]:
    """A planned run in the columns of a stored row (as the runner writes them)."""
    return {"task": spec.task, "preset": spec.preset, "method": spec.method,
            "model": str(spec.task_params.get("model", spec.task)),
            "task_params": json.dumps(spec.task_params, sort_keys=True),
            "method_params": json.dumps(spec.method_params, sort_keys=True),
            "budget_steps": spec.budget.steps, "budget_epochs": spec.budget.epochs,
            "budget_seconds": spec.budget.seconds, "world_size": spec.world_size, "device": spec.device}


def _same(rows: pd.DataFrame, target: dict[str, Any], columns: list[str]) -> pd.DataFrame:
    mask = pd.Series(True, index=rows.index)
    for c in columns:
        value = target.get(c)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            mask &= rows[c].isna()
        else:
            mask &= rows[c].astype(object) == value
    return rows[mask]


def planned_samples(target: dict[str, Any], rows: pd.DataFrame) -> float | None:
    """Training samples the budget plans: steps × batch, or epochs × samples per epoch (read from a
    stored run on the same data)."""
    same_data = _same(rows, target, ["task", "preset", "task_params"])
    if not len(same_data):
        same_data = _same(rows, target, ["task", "preset"])
    done = same_data[same_data["samples"] > 0]
    if not len(done):
        return None
    if target.get("budget_steps"):
        per_step = (done["samples"] / done["gradient_updates"].clip(lower=1)).median()
        return float(target["budget_steps"]) * per_step * target.get("world_size", 1)
    if target.get("budget_epochs"):
        per_epoch = (done["samples"] / done["epochs"]).replace([np.inf], np.nan).median()
        return float(target["budget_epochs"]) * per_epoch
    return None


def forecast_time(target: dict[str, Any], rows: pd.DataFrame, levels=LEVELS,
                  factors: CostFactors | None = None) -> tuple[str | None, float | None, pd.DataFrame]:
    """(basis level, train seconds, basis rows) for one planned run: the closest level, else the
    factor model where it identifies the run's workload and method (basis rows: the workload's)."""
    for level, columns in levels:
        basis = _same(rows, target, columns)
        if not len(basis):
            continue
        if level == "same configuration":
            return level, float(basis["train_s"].median()), basis
        if target.get("budget_seconds"):
            return level, float(target["budget_seconds"]), basis
        samples = planned_samples(target, rows)
        trained = basis[basis["samples"] > 0]
        if samples is None or not len(trained):
            return level, float(basis["train_s"].median()), basis  # a fixed model: nothing to scale
        per_sample = (trained["train_s"] / trained["samples"]).median()
        return level, float(per_sample * samples), basis
    if factors is not None:
        return _from_factors(target, rows, factors)
    return None, None, rows.iloc[0:0]


def _from_factors(target: dict[str, Any], rows: pd.DataFrame, factors: CostFactors
                  ) -> tuple[str | None, float | None, pd.DataFrame]:
    workload = _same(rows, target, ["task", "preset", "task_params"])
    per_sample = factors.seconds_per_sample(workload_names(pd.DataFrame([target]))[0], target["method"])
    samples = planned_samples(target, rows)
    if per_sample is None or not len(workload):
        return None, None, rows.iloc[0:0]
    if target.get("budget_seconds"):
        return FACTORS, float(target["budget_seconds"]), workload
    if samples is None:
        return None, None, rows.iloc[0:0]
    return FACTORS, float(per_sample * samples), workload


def _target(first: pd.Series) -> dict[str, Any]:
    """A stored cell's configuration as a planned run's target."""
    return {c: (None if pd.isna(first[c]) else first[c]) for c in CONFIG}


def check_factors(rows: pd.DataFrame, max_error: float = FACTOR_MAX_ERROR) -> FactorCheck:
    """The factor model alone, leave-one-cell-out: each cell whose workload and method the others
    identify is forecast from them (whether or not a closer level would have served it)."""
    errs = []
    for _, cell in _cells(rows):
        rest = rows.drop(index=cell.index)
        if not len(rest):
            continue
        level, train_s, _ = _from_factors(_target(cell.iloc[0]), rest, CostFactors(rest))
        if level is not None:
            errs.append(abs(train_s / float(cell["train_s"].median()) - 1))
    return FactorCheck(float(np.median(errs)) if errs else None, len(errs), max_error)


def basis_factors(rows: pd.DataFrame, max_error: float = FACTOR_MAX_ERROR
                  ) -> tuple[CostFactors | None, FactorCheck]:
    """The factor model a forecast may use on this history: None where its check holds it back."""
    check = check_factors(rows, max_error)
    return (None if check.held_back else CostFactors(rows)), check


def fit_energy(rows: pd.DataFrame, linear: bool, kind: str | None = None) -> EnergyModel | None:
    """The energy model on the rows of one kind (``energy_kind(rows)`` where not given); None where
    no row is of that kind."""
    kind = kind or energy_kind(rows)
    rows = of_kind(rows, kind)
    if not len(rows):
        return None
    a = rows["train_energy_j"] / rows["train_dh"]
    if not linear:
        return EnergyModel(np.array([float(a.median())]), False, kind)
    x = np.column_stack([np.ones(len(rows)), rows["samples"] / rows["train_dh"],
                         rows["gradient_updates"] / rows["train_dh"]])
    coef, *_ = np.linalg.lstsq(x, a.to_numpy(dtype=float), rcond=None)
    return EnergyModel(coef, True, kind)


def forecast(target: dict[str, Any], rows: pd.DataFrame, model: EnergyModel | None, label: str,
             g_per_kwh: float, levels=LEVELS, factors: CostFactors | None = None) -> Forecast:
    level, train_s, basis = forecast_time(target, rows, levels, factors)
    if level is None:
        return Forecast(label, None)
    dh = target.get("world_size", 1) * train_s / 3600.0
    rate = basis[basis["samples"] > 0]
    samples_dh = float((rate["samples"] / rate["train_dh"]).median()) if len(rate) else 0.0
    updates_dh = float((rate["gradient_updates"] / rate["train_dh"]).median()) if len(rate) else 0.0
    joules = None if model is None else model.per_device_hour(samples_dh, updates_dh) * dh
    wall_ratio = float((basis["wall_s"] / basis["train_s"]).median())
    co2 = None if joules is None else joules / 3.6e6 * g_per_kwh
    return Forecast(label, level, train_s, joules, dh * wall_ratio, co2)


# -- validation --------------------------------------------------------------------------------------
def _cells(rows: pd.DataFrame) -> list[tuple[Any, pd.DataFrame]]:
    keyed = rows.assign(_cfg=["|".join(map(str, values)) for values in rows[CONFIG].itertuples(index=False)])
    return list(keyed.groupby("_cfg"))


def loco_errors(rows: pd.DataFrame, linear: bool | dict[str, bool], factors_ok: bool = True) -> pd.DataFrame:
    """Each cell forecast from the others: absolute percentage error of train seconds and joules,
    the joules from the other cells' rows of the cell's own energy kind (``linear``: the energy
    model's form, one for all kinds or one per kind).
    With ``factors_ok`` False (the factor basis held back) the factor model is not a basis; where
    it would have served a cell, what it would have given is kept as that cell's guess."""
    out = []
    for _, cell in _cells(rows):
        rest = rows.drop(index=cell.index)
        if not len(rest):
            continue
        first = cell.iloc[0]
        kind = energy_kind(cell)
        model = fit_energy(rest, linear if isinstance(linear, bool) else linear[kind], kind)
        target = _target(first)
        f = forecast(target, rest, model, "", 0.0, factors=CostFactors(rest) if factors_ok else None)
        guess = None
        if f.basis is None and not factors_ok:
            guess = forecast(target, rest, model, "", 0.0, (), CostFactors(rest))
            guess.basis = f"{FACTORS} (held back)" if guess.basis else None
        if f.basis is None and (guess is None or not guess.basis):
            guess = forecast(target, rest, model, "", 0.0, GUESSES)
        guess = guess if guess is not None and guess.basis else None
        actual_s, actual_j = float(cell["train_s"].median()), float(cell["train_energy_j"].median())
        out.append({"cell": f"{first['task']}/{first['preset']}/{first['model']}/{first['method']}",
                    "guess": guess.basis if guess else None,
                    "guess_err_s": abs(guess.train_s / actual_s - 1) if guess else None,
                    "basis": f.basis or "no basis", "actual_s": actual_s, "forecast_s": f.train_s,
                    "actual_j": actual_j, "forecast_j": f.energy_j,
                    "err_s": abs(f.train_s / actual_s - 1) if f.basis else None,
                    "energy": energy_kind(cell),
                    "err_j": (abs(f.energy_j / actual_j - 1)
                              if f.basis and f.energy_j is not None and actual_j > 0 else None)})
    return pd.DataFrame(out)


def choose_energy_model(rows: pd.DataFrame, kind: str | None = None
                        ) -> tuple[EnergyModel | None, dict[str, float]]:
    """The energy model with the smaller leave-one-cell-out median error on this history's rows of
    one energy kind (``energy_kind(rows)`` where not given), with the error of each candidate
    (energy error given the true device-hours, so the choice is not blurred by the time forecast)."""
    kind = kind or energy_kind(rows)
    rows = of_kind(rows, kind)
    errors = {}
    for linear in (False, True):
        errs = []
        for _, cell in _cells(rows):
            rest = rows.drop(index=cell.index)
            if len(rest) < (4 if linear else 1):
                continue
            m = fit_energy(rest, linear, kind)
            for _, r in cell.iterrows():
                a = m.per_device_hour(r["samples"] / r["train_dh"], r["gradient_updates"] / r["train_dh"])
                if r["train_energy_j"] > 0:
                    errs.append(abs(a * r["train_dh"] / r["train_energy_j"] - 1))
        errors["linear" if linear else "constant"] = float(np.median(errs)) if errs else math.inf
    linear = errors["linear"] < errors["constant"]
    return fit_energy(rows, linear, kind), errors


def plan_forecasts(specs: list[ResolvedSpec], store, g_per_kwh: float,
                   max_error: float = FACTOR_MAX_ERROR) -> tuple[list[Forecast], str, str]:
    """Forecasts for planned runs from the store's rows of this machine's hardware class."""
    from joulebench.harness.provenance import provenance

    hw = hardware_class({**provenance(specs[0].device if specs else "cpu"),
                         "device": specs[0].device if specs else "cpu",
                         "world_size": specs[0].world_size if specs else 1})
    rows = history(store, hw)
    if rows.empty:
        return [Forecast(_label(s), None) for s in specs], hw, "no stored runs of this hardware class"
    model, _ = choose_energy_model(rows)
    factors, check = basis_factors(rows, max_error)
    pairs = CostFactors(rows).pairs if factors is None else factors.pairs
    return ([forecast(spec_features(s), rows, model, _label(s), g_per_kwh, factors=factors) for s in specs],
            hw, f"{model.describe()}; time: closest stored level, else {FACTORS} ({pairs} pairs; "
                f"{check.describe()})")


def _label(spec: ResolvedSpec) -> str:
    model = spec.task_params.get("model")
    return (f"{spec.run_key[:12]} {spec.task}/{spec.method} {spec.preset}"
            + (f" model={model}" if model else "") + f" seed={spec.seed} ws={spec.world_size}")


def format_forecasts(forecasts: list[Forecast], hw: str, model: str) -> str:
    lines = [f"forecast from stored runs of {hw}; {model}",
             "| run | basis | train s | joules | device-hours | CO2 g |", "|---|---|---|---|---|---|"]
    for f in forecasts:
        if f.basis is None:
            lines.append(f"| {f.label} | no basis | – | – | – | – |")
        else:
            lines.append(f"| {f.label} | {f.basis} | {f.train_s:,.1f} | {f.energy_j:,.0f} | "
                         f"{f.device_hours:.4f} | {f.co2_g:.2f} |")
    known = [f for f in forecasts if f.basis]
    total = (f"total ({len(known)} of {len(forecasts)} runs with a basis): "
             f"{sum(f.train_s for f in known):,.0f} train s, {sum(f.energy_j for f in known):,.0f} J, "
             f"{sum(f.device_hours for f in known):.3f} device-hours, {sum(f.co2_g for f in known):.1f} g CO2")
    missing = len(forecasts) - len(known)
    return "\n".join(lines + [total] + ([f"{missing} runs have no basis: their cost is unknown, not zero"]
                                        if missing else []))


def format_validation(rows: pd.DataFrame, max_error: float = FACTOR_MAX_ERROR) -> str:
    check = check_factors(rows, max_error)
    models = {kind: choose_energy_model(rows, kind) for kind in ENERGY_KINDS if len(of_kind(rows, kind))}
    errors = loco_errors(rows, {kind: model.linear for kind, (model, _) in models.items()},
                         factors_ok=not check.held_back)
    scored = errors[errors["basis"] != "no basis"]
    lines = [f"leave-one-cell-out over {len(errors)} stored cells ({len(rows)} runs); joules of each kind "
             "from its own rows only"]
    for model, candidates in models.values():
        lines.append(f"{model.describe()}; candidates (median error given true device-hours): "
                     + ", ".join(f"{k} {v:.1%}" for k, v in candidates.items()))
    lines += [conditions(rows), check.describe(),
             "| cell | basis | train s actual | forecast | err | joules actual | forecast | err |",
             "|---|---|---|---|---|---|---|---|"]
    for _, e in errors.iterrows():
        if e["basis"] == "no basis":
            hint = "" if pd.isna(e["guess"]) else f" ({e['guess']} would miss by {e['guess_err_s']:.0%})"
            lines.append(f"| {e['cell']} | no basis{hint} | {e['actual_s']:,.1f} | – | – | "
                         f"{e['actual_j']:,.0f} | – | – |")
        else:
            err_j = "–" if e["err_j"] is None or pd.isna(e["err_j"]) else f"{e['err_j']:.0%}"
            lines.append(f"| {e['cell']} | {e['basis']} | {e['actual_s']:,.1f} | {e['forecast_s']:,.1f} | "
                         f"{e['err_s']:.0%} | {e['actual_j']:,.0f} | {e['forecast_j']:,.0f} | {err_j} |")
    if len(scored):
        lines.append(f"median absolute error: train seconds {scored['err_s'].median():.1%}, joules "
                     f"{pd.to_numeric(scored['err_j']).median():.1%} over {len(scored)} cells with a basis; "
                     f"{len(errors) - len(scored)} cells had no basis")
        for kind, group in scored.groupby("energy") if len(models) > 1 else ():
            lines.append(f"  {kind} energy: {len(group)} cells, median error joules "
                         f"{pd.to_numeric(group['err_j']).median():.1%}")
        for basis, group in scored.groupby("basis"):
            lines.append(f"  {basis}: {len(group)} cells, median error train seconds "
                         f"{group['err_s'].median():.1%}")
    else:
        lines.append("no cell had a basis once left out")
    lines.append(f"coverage: {len(scored)} of {len(errors)} cells got a forecast, "
                 f"{len(errors) - len(scored)} no basis")
    looser = errors[errors["guess"].isin([level for level, _ in GUESSES])]
    guessed = pd.to_numeric(looser["guess_err_s"], errors="coerce").dropna()
    if len(guessed):
        lines.append(f"not used as a basis: the nearest looser level would have missed train seconds by "
                     f"{guessed.median():.0%} (median over {len(guessed)} cells)")
    return "\n".join(lines)


def conditions(rows: pd.DataFrame) -> str:
    """How contended the history's times were: a forecast from rows taken beside other work (or
    alone) holds for a campaign run the same way, and its error includes how much that varied."""
    load = pd.to_numeric(rows.get("host_load_1m"), errors="coerce").dropna() if "host_load_1m" in rows else ()
    if not len(load):
        return "machine load while the rows ran: not recorded (rows older than the host_load_1m column)"
    share = (pd.to_numeric(rows["train_cpu_s"], errors="coerce") / rows["train_s"]).dropna()
    cores = pd.to_numeric(rows.get("cpu_count"), errors="coerce").dropna()
    return (f"machine load while the rows ran: median {load.median():.2f} (range {load.min():.2f}–"
            f"{load.max():.2f}, {len(load)} of {len(rows)} rows)"
            + (f" on {int(cores.median())} cores" if len(cores) else "")
            + (f"; CPU seconds per training second: median {share.median():.2f} "
               f"({share.min():.2f}–{share.max():.2f})" if len(share) else ""))


def parse_energy(text: str) -> float:
    """``500kJ``, ``2 MJ``, ``0.5kWh``, ``800 J`` → joules; one-line error otherwise."""
    from joulebench.harness.params import SpecError

    units = {"kwh": 3.6e6, "wh": 3600.0, "mj": 1e6, "kj": 1e3, "j": 1.0}
    raw = text.strip().lower().replace(" ", "")
    for unit, factor in units.items():
        if raw.endswith(unit):
            try:
                value = float(raw[: -len(unit)])
            except ValueError:
                break
            if value > 0 and math.isfinite(value):
                return value * factor
            break
    raise SpecError(f"--max-energy {text!r}: give a positive energy with a unit, e.g. 500kJ, 2MJ, 0.5kWh")


# -- commands -------------------------------------------------------------------------------------------
def print_estimate(specs: list[ResolvedSpec], results, validate: bool,
                   max_error: float | None = None) -> None:
    from joulebench.harness import carbon
    from joulebench.harness.params import SpecError
    from joulebench.harness.store import Store

    if max_error is None:
        max_error = FACTOR_MAX_ERROR
    if not max_error > 0:
        raise SpecError(f"--factor-max-error {max_error}: give a positive fraction, e.g. 0.5 (inf: always use)")
    store = Store(results)
    if specs:
        forecasts, hw, model = plan_forecasts(specs, store, carbon.intensity(None).g_per_kwh, max_error)
        print(format_forecasts(forecasts, hw, model))
    if validate:
        rows = history(store)
        for hw, group in rows.groupby("hw") if len(rows) else ():
            print(f"\n{hw}:")
            print(format_validation(group.reset_index(drop=True), max_error))
        if not len(rows):
            print("no stored ok runs to validate the forecast on")


class EnergyCap:
    """``campaign run --max-energy``: refuse a campaign forecast above the cap, and stop launching
    runs once the energy of the finished ones (setup + train + eval) reaches it."""

    def __init__(self, joules: float, text: str) -> None:
        self.joules, self.text, self.spent, self.finished = joules, text, 0.0, 0

    @classmethod
    def check(cls, text: str, todo: list[ResolvedSpec], store, executor: str) -> EnergyCap:
        import sys

        from joulebench.harness import carbon
        from joulebench.harness.params import SpecError

        cap = cls(parse_energy(text), text)
        forecasts, hw, _ = plan_forecasts(todo, store, carbon.intensity(None).g_per_kwh)
        known = [f for f in forecasts if f.basis]
        total = sum(f.energy_j for f in known)
        if total > cap.joules:
            raise SpecError(f"the forecast for the {len(todo)} runs to do is {total:,.0f} J "
                            f"({len(known)} with a basis), above --max-energy {text} ({cap.joules:,.0f} J); "
                            "see `joulebench campaign plan FILE --estimate`")
        print(f"energy cap {text}: forecast {total:,.0f} J for {len(known)} of {len(todo)} runs "
              f"(the rest have no basis on {hw})", flush=True)
        if executor != "local":
            print("note: only the local executor stops launching at the cap; "
                  f"{executor} checks the forecast only", file=sys.stderr)
        return cap

    def add(self, result: dict[str, Any]) -> None:
        value = result.get("total_energy_j")
        if value is None:
            value = result.get("train_energy_j")
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            self.spent += float(value)
        self.finished += 1

    def reached(self) -> bool:
        return self.spent >= self.joules

    def stopped_line(self, not_started: int) -> str:
        return (f"energy cap {self.text} reached: {self.spent:,.0f} J spent by {self.finished} runs; "
                f"{not_started} runs not started (run the campaign again to continue)")
