"""Execute one resolved run in this process: seed, set up, train, evaluate, measure, store.

The runner owns everything a method must not: phases, energy, budgets, NaN detection, evaluation,
and the result row. Isolation from crashes is the worker's job (``harness.worker``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from joulebench.harness import carbon
from joulebench.harness.context import DistInfo, Diverged, Ledger, TrainContext, evaluate_model
from joulebench.harness.distributed import node_count
from joulebench.harness.identity import new_attempt_id
from joulebench.harness.params import Hyper, unread_params
from joulebench.harness.phases import Phase, PhaseClock
from joulebench.harness.registry import registry
from joulebench.harness.rows import base_row, now_utc
from joulebench.harness.spec import ResolvedSpec, RunSpec, resolve
from joulebench.harness.store import Store


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class RunFailed(RuntimeError):
    """The run broke the harness's contract (nothing reported, a parameter nobody read)."""


class Runner:
    """Runs specs in this process against one store, with one meter started once."""

    def __init__(self, store: Store, meter=None, dist: DistInfo | None = None,
                 region: str | None = None, store_rows: bool = True,
                 progress: Callable[[int, int | None], None] | None = None) -> None:
        self.store = store
        self.progress = progress
        self.meter = meter
        self.dist = dist or DistInfo()
        self.intensity = carbon.intensity(region)
        self.store_rows = store_rows

    def run(self, spec: ResolvedSpec, attempt_id: str | None = None) -> dict[str, Any]:
        started = now_utc()
        t0 = time.perf_counter()
        device = torch.device(spec.device if spec.device == "cpu" else f"cuda:{self.dist.local_rank}")
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        ledger = Ledger(PhaseClock(self.meter, sync))
        reset_peak_memory(device)
        row = base_row(spec, started, attempt_id or new_attempt_id())
        search = registry().method(spec.method).search and self.dist.is_main
        rerun = search and self._start_search_afresh(spec)
        ctx: TrainContext | None = None
        status, error, tb = "ok", None, None
        ledger.clock.switch(Phase.SETUP)
        try:
            ctx = self._setup(spec, device, ledger)
            row["model"] = ctx.task.model_name()
            row["n_params"] = sum(p.numel() for p in ctx.model.parameters())
            self._train(spec, ctx)
            ledger.clock.switch(Phase.EVAL)
            row.update(adopted_metrics(ledger.adopted) if ledger.adopted else self._final_metrics(ctx))
            row["params_read"] = self._check_reads(spec, ctx)
        except Diverged as exc:
            status, error = "diverged", str(exc)
        except Exception as exc:  # any failure of task or method is stored, never lost
            status, error = "failed", one_line(exc)
            tb = None if isinstance(exc, RunFailed) else traceback.format_exc()
        ledger.clock.switch(None)
        if self.dist.world_size > 1:
            sum_energy_over_ranks(ledger.clock, self.dist)
            if ctx is not None:  # samples are per rank; synchronised updates count once
                from joulebench.harness.distributed import sum_over_ranks

                ledger.samples = int(sum_over_ranks([float(ledger.samples)], True)[0] or 0)
        row.update(self._costs(spec, ledger, ctx, time.perf_counter() - t0, device))
        if search and not rerun:
            row.update(self._earlier_trials(spec, started, row))
        row.update(status=status, error=error, traceback=tb, finished_at=now_utc())
        if self.store_rows and self.dist.is_main:
            curves = [{"run_key": spec.run_key, "attempt_id": row["attempt_id"], "task": spec.task,
                       "method": spec.method, "run_started_at": started, **c} for c in ledger.curves]
            self.store.write_run(row, curves)
        return row

    def _setup(self, spec: ResolvedSpec, device: torch.device, ledger: Ledger) -> TrainContext:
        reg = registry()
        seed_everything(spec.seed)
        task = reg.task(spec.task)(Hyper(spec.task_params), spec.preset, spec.seed, device,
                                   self.dist.rank, spec.world_size)
        task.setup()
        seed_everything(spec.seed)  # the model's init must not depend on how much data set-up drew
        model = task.build_model().to(device)
        ctx = TrainContext(spec=spec, task=task, model=model, hp=Hyper(spec.method_params),
                           device=device, ledger=ledger, dist=self.dist, progress=self.progress,
                           work_root=self.store.root / "work")
        ctx.run_child = lambda **overrides: self._run_child(spec, **overrides)
        return ctx

    def _train(self, spec: ResolvedSpec, ctx: TrainContext) -> None:
        """The method's training, in the train window; the budget is enforced by ``ctx``."""
        ctx.clock.switch(Phase.TRAIN)
        method = registry().method(spec.method)(ctx.hp)
        refusal = method.check_model(ctx.model)
        if refusal:
            raise RuntimeError(f"method {spec.method!r} refuses this model: {refusal}")
        if any(p.requires_grad for p in ctx.model.parameters()) or method.fits_fixed_models or method.search:
            method.train(ctx)
            if ctx.ledger.steps and not ctx.ledger.reported:
                raise RunFailed(f"method {spec.method!r} took {ctx.ledger.steps} steps of batches but never "
                                "called ctx.step(loss): report each step so its updates are counted")
        else:  # a fixed forecaster (seasonal-naive, a profile): nothing to train, evaluate as is
            ctx.record(training_skipped="no trainable parameters")
        if self.dist.world_size > 1:
            ctx.record(param_spread_over_ranks=parameter_spread(ctx.model))

    def _check_reads(self, spec: ResolvedSpec, ctx: TrainContext) -> str:
        """Fail a run that sets a parameter nothing read (it changes the key and nothing else)."""
        reg = registry()
        trained = "training_skipped" not in ctx.ledger.stats  # a fixed model: the method never ran
        unread = [f"method {spec.method!r} parameter {n!r}"
                  for n in unread_params(ctx.hp, reg.method(spec.method).params) if trained]
        unread += [f"task {spec.task!r} parameter {n!r}"
                   for n in unread_params(ctx.task.hp, reg.task(spec.task).params)]
        if unread and not ctx.ledger.adopted:
            raise RunFailed(f"{', '.join(unread)} set but never read by the run: remove it, or make "
                            "the code read it")
        return json.dumps({"task": sorted(ctx.task.hp.read & set(spec.task_params)),
                           "method": sorted(ctx.hp.read & set(spec.method_params))})

    def _final_metrics(self, ctx: TrainContext) -> dict[str, Any]:
        task_cls = type(ctx.task)
        val = evaluate_model(ctx.task, ctx.model, "val")
        test = evaluate_model(ctx.task, ctx.model, "test")
        ledger = ctx.ledger
        if not ledger.curves or ledger.curves[-1]["step"] != ledger.steps:
            train_s, train_j = ctx.clock.train_so_far()
            ledger.point("val", val, train_s, train_j)
            ctx.check_target(val, train_s, train_j)
        primary = test.get(task_cls.primary_metric)
        out: dict[str, Any] = {
            "primary_value": primary,
            "metrics_json": json.dumps({"test": test, "val": val}, sort_keys=True),
        }
        out.update({f"metric_{k}": v for k, v in test.items()})
        out.update({f"val_{k}": v for k, v in val.items()})
        return out

    def _costs(self, spec: ResolvedSpec, ledger: Ledger, ctx: TrainContext | None,
               wall_s: float, device: torch.device) -> dict[str, Any]:
        clock = ledger.clock
        train = clock.joules["train"]
        sources = clock.sources
        estimated = any(s.startswith("estimate") for s in sources.values()) if sources else None
        total = [clock.total_j(p) for p in ("setup", "train", "eval")]
        total_j = sum(v for v in total if v is not None) if any(v is not None for v in total) else None
        g = self.intensity.g_per_kwh
        out: dict[str, Any] = {
            "wall_s": wall_s, "setup_s": clock.seconds["setup"], "train_s": clock.seconds["train"],
            "eval_s": clock.seconds["eval"], "train_cpu_s": clock.cpu_seconds["train"],
            "host_load_1m": host_load(),
            "setup_energy_j": clock.total_j("setup"), "train_energy_j": clock.total_j("train"),
            "eval_energy_j": clock.total_j("eval"), "total_energy_j": total_j,
            "train_energy_cpu_j": train.get("cpu"), "train_energy_gpu_j": train.get("gpu"),
            "train_energy_dram_j": train.get("dram"),
            "energy_cpu_source": sources.get("cpu"), "energy_gpu_source": sources.get("gpu"),
            "energy_dram_source": sources.get("dram"),
            "energy_source": summarize_sources(sources), "energy_estimated": estimated,
            "energy_notes": "; ".join(getattr(self.meter, "notes", []) or []) or None,
            "co2_g": carbon.co2_grams(clock.total_j("train"), g),
            "co2_total_g": carbon.co2_grams(total_j, g),
            "carbon_intensity_g_per_kwh": g, "carbon_region": self.intensity.region,
            "carbon_source": self.intensity.source,
            "nodes": node_count(self.dist),
            "device_hours": spec.world_size * wall_s / 3600.0,
        }
        peak, source = peak_memory(device)
        out.update(peak_mem_bytes=peak, peak_mem_source=source)
        if ctx is not None:
            batch = ctx.task.batch_size
            out.update(samples=ledger.samples, gradient_updates=ledger.gradient_updates, steps=ledger.steps,
                       epochs=ledger.epoch, local_batch=batch, global_batch=batch * spec.world_size,
                       n_trainable_params=sum(p.numel() for p in ctx.model.parameters() if p.requires_grad))
            if ledger.target_hit:
                out.update(reached_target=True, time_to_target_s=ledger.target_hit[0],
                           energy_to_target_j=ledger.target_hit[1])
            elif type(ctx.task).presets[spec.preset].target is not None:
                out["reached_target"] = False
        if ledger.stats:
            out["extra_json"] = json.dumps(ledger.stats, sort_keys=True, default=str)
            out.update({f"x_{k}": v for k, v in ledger.stats.items()
                        if isinstance(v, (int, float, str, bool))})
        return out

    def _start_search_afresh(self, spec: ResolvedSpec) -> bool:
        """A finished search run again (``--force``) starts from scratch: its checkpoints go, and
        its old trials are not charged to the new row. An unfinished one resumes."""
        if spec.run_key not in self.store.stored_keys():
            return False
        shutil.rmtree(self.store.root / "work" / spec.run_key, ignore_errors=True)
        return True

    def _earlier_trials(self, spec: ResolvedSpec, started: datetime, row: dict[str, Any]) -> dict[str, Any]:
        """A search resumed after a crash also pays for the trials it ran before the crash."""
        earlier = self.store.execute(
            "SELECT count(*), sum(total_energy_j), sum(wall_s) FROM runs "
            "WHERE parent_key = ? AND started_at < ?", [spec.run_key, started]).fetchone()
        if not earlier[0]:
            return {}
        joules, seconds = earlier[1] or 0.0, earlier[2] or 0.0
        note = (f"includes {earlier[0]} trials ({joules:.1f} J, {seconds:.1f} s) run before a restart; "
                "per-device columns cover this attempt only")
        notes = "; ".join(n for n in (row.get("energy_notes"), note) if n)
        out = {"energy_notes": notes, "x_earlier_trials": earlier[0], "x_earlier_trials_energy_j": joules}
        for key in ("train_energy_j", "total_energy_j"):
            if row.get(key) is not None:
                out[key] = row[key] + joules
        g = self.intensity.g_per_kwh
        out["co2_g"] = carbon.co2_grams(out.get("train_energy_j"), g)
        out["co2_total_g"] = carbon.co2_grams(out.get("total_energy_j"), g)
        out["train_s"] = (row.get("train_s") or 0.0) + seconds
        return out

    def _run_child(self, parent: ResolvedSpec, **overrides: Any) -> dict[str, Any]:
        """A trial: the parent's task, seed, device and evaluation cadence; its timeout (a label
        here: the worker enforces the parent's, which bounds every trial) is resolved from the
        budget the trial trains, not inherited from the parent's whole-search limit."""
        base = {"task": parent.task, "method": parent.method, "preset": parent.preset,
                "task_params": parent.task_params, "seed": parent.seed, "device": parent.device,
                "campaign": parent.campaign, "eval_every": parent.eval_every,
                "parent_key": parent.run_key}
        child = resolve(RunSpec.parse({**base, **overrides}))
        # a trial is a single-process run of its own, whichever rank of a search runs it
        runner = Runner(self.store, self.meter, region=self.intensity.region, store_rows=self.store_rows)
        return runner.run(child)


def host_load() -> float | None:
    """The machine's 1-minute load average as the run ends (None where the OS has none): a time
    taken beside other work is longer than the same run alone, and the row should say so."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def parameter_spread(model: torch.nn.Module) -> float | None:
    """Largest difference between ranks of a checksum of the weights (0: replicas in sync)."""
    import torch.distributed as tdist

    if not tdist.is_initialized():
        return None
    checksum = torch.tensor([sum(float(p.detach().double().sum()) for p in model.parameters())],
                            dtype=torch.float64)
    high, low = checksum.clone(), checksum.clone()
    tdist.all_reduce(high, op=tdist.ReduceOp.MAX)
    tdist.all_reduce(low, op=tdist.ReduceOp.MIN)
    return float(high - low)


NODE_LEVEL_SOURCES = ("rapl", "nvml", "estimate:codecarbon/ram-power-model")
"""Figures that describe the whole node, so only the node's first rank reports them: the sensors,
and codecarbon's RAM model, whose power is a floor of two DIMMs (10 W) whatever one process uses;
summed over four ranks on one machine it would claim four machines' memory."""


def sum_energy_over_ranks(clock: PhaseClock, dist_info: DistInfo) -> None:
    """Replace this rank's window energies by the run's: process-level estimates are summed over
    all ranks, node-level figures over the first rank of each node, so nothing counts twice."""
    from joulebench.harness.distributed import sum_over_ranks

    for device in ("cpu", "gpu", "dram"):
        node_level = clock.sources.get(device, "").startswith(NODE_LEVEL_SOURCES)
        first = dist_info.local_rank == 0 or not node_level
        values = [clock.joules[phase][device] for phase in ("setup", "train", "eval")]
        for phase, total in zip(("setup", "train", "eval"), sum_over_ranks(values, first)):
            clock.joules[phase][device] = total


def adopted_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """A search's result is its best trial: its stored metrics become the search's."""
    metrics = json.loads(row["metrics_json"])
    out: dict[str, Any] = {"primary_value": row["primary_value"], "metrics_json": row["metrics_json"]}
    out.update({f"metric_{k}": v for k, v in metrics.get("test", {}).items()})
    out.update({f"val_{k}": v for k, v in metrics.get("val", {}).items()})
    return out


def summarize_sources(sources: dict[str, str]) -> str | None:
    """One label per row, e.g. ``estimate:codecarbon`` or ``rapl+nvml``; an estimate is never hidden."""
    if not sources:
        return None
    kinds = sorted({s.split("/")[0].split(",")[0] for s in sources.values()})
    return "+".join(kinds)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux ≥ 4.0: writing 5 resets the peak resident set size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory(device: torch.device) -> tuple[int | None, str | None]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "VmHWM (process peak RSS)"
    except OSError:
        pass
    return None, None
