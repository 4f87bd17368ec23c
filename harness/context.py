"""What a method sees of a run (``TrainContext``) and what the runner keeps for itself (``Ledger``).

A method reads like this (the runner times, meters, evaluates and stores around it)::

    for batch in ctx.batches():          # the runner counts samples and stops at the budget
        loss = ctx.loss(ctx.model, batch)
        ...                              # compute an update however the method likes
        ctx.step(loss)                   # reports the loss (NaN check) and the updates made

The budget is the runner's, not the method's: ``batches()`` counts steps, epochs and seconds
itself and stops (on several ranks, all ranks at the same step), so a method that forgets to
report still ends on time; the runner then fails the run, because its updates went uncounted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from joulebench.harness.params import Hyper
from joulebench.harness.phases import Phase, PhaseClock
from joulebench.harness.task import Batch, Task

if TYPE_CHECKING:
    from joulebench.harness.spec import ResolvedSpec


class Diverged(RuntimeError):
    """The loss became NaN or infinite; the run is stored with status ``diverged``."""


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class Ledger:
    """The runner's accounts of one run: counters, the phase clock, curve points, the target.

    Only the runner and the context write here; the result row is built from it.
    """

    clock: PhaseClock
    steps: int = 0
    """Steps the runner handed out through ``batches()`` (and work counted by ``count``)."""
    reported: int = 0
    """Calls of ``ctx.step`` and ``ctx.count``: zero after training means nothing was reported."""
    samples: int = 0
    gradient_updates: int = 0
    epoch: float = 0.0
    last_loss: float | None = None
    curves: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    target_hit: tuple[float, float | None] | None = None
    adopted: dict[str, Any] | None = None
    """A search method's chosen trial row; its metrics become this run's result."""

    def point(self, split: str, metrics: dict[str, float], train_s: float, train_j: float | None) -> None:
        self.curves.append({"split": split, "step": self.steps, "epoch": self.epoch,
                            "samples": self.samples, "train_s": train_s, "train_energy_j": train_j,
                            "metrics_json": metrics})


@dataclass
class TrainContext:
    """The narrow view a method gets: model, data, loss, budget, evaluation, a step logger."""

    spec: ResolvedSpec
    task: Task
    model: nn.Module
    hp: Hyper
    device: torch.device
    ledger: Ledger
    dist: DistInfo = field(default_factory=DistInfo)
    run_child: Callable[..., dict[str, Any]] | None = None
    """For search methods: ``run_child(method=..., method_params=..., task_params=...)`` runs a
    trial as a child run (stored with this run's key as ``parent_key``) and returns its row."""
    work_root: Path = Path("results") / "work"
    progress: Callable[[int, int | None], None] | None = None
    """Called at most twice a second with (steps done, planned steps) to drive a progress bar."""
    loader: Any = field(default=None, repr=False)
    last_progress: float = field(default=0.0, repr=False)

    # -- what a method reads ------------------------------------------------------------------
    @property
    def clock(self) -> PhaseClock:
        return self.ledger.clock

    @property
    def steps(self) -> int:
        return self.ledger.steps

    @property
    def samples(self) -> int:
        return self.ledger.samples

    @property
    def epoch(self) -> float:
        return self.ledger.epoch

    @property
    def global_batch(self) -> int:
        """Samples per optimiser step over all ranks (what linear learning-rate scaling uses)."""
        return self.task.batch_size * self.dist.world_size

    @property
    def train_loader(self):
        if self.loader is None:
            generator = torch.Generator().manual_seed(self.spec.seed)
            sampler = None
            if self.dist.world_size > 1:
                from torch.utils.data.distributed import DistributedSampler

                sampler = DistributedSampler(self.task.train_dataset(), num_replicas=self.dist.world_size,
                                             rank=self.dist.rank, shuffle=True, seed=self.spec.seed)
            self.loader = self.task.train_loader(sampler=sampler, generator=generator)
        return self.loader

    @property
    def steps_per_epoch(self) -> int:
        return max(len(self.train_loader), 1)

    @property
    def planned_steps(self) -> int | None:
        """Steps the budget allows (for learning-rate schedules); None for a seconds-only budget."""
        b = self.spec.budget
        options = [b.steps] if b.steps else []
        if b.epochs:
            options.append(max(int(math.ceil(b.epochs * self.steps_per_epoch)), 1))
        return min(options) if options else None

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.task.loss(model, batch)

    def ddp(self, model: nn.Module) -> nn.Module:
        """The model wrapped for data-parallel training when the run has several ranks."""
        if self.dist.world_size <= 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def to_device(self, batch: Batch) -> Batch:
        """A training batch on the run's device, then through the task's ``on_device`` (work the
        task does there, e.g. decoding JPEGs on the GPU)."""
        if self.device.type != "cpu":  # loaders yield CPU tensors: on CPU nothing to move
            batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                     for k, v in batch.items()}
        return self.task.on_device(batch)

    # -- the budget (owned here, not by the method) -------------------------------------------
    def train_seconds(self) -> float:
        return self.clock.elapsed(Phase.TRAIN)

    @property
    def exhausted(self) -> bool:
        """True once any limit of the budget is reached; on several ranks, agreed by all."""
        b = self.spec.budget
        done = (b.steps is not None and self.ledger.steps >= b.steps
                or b.epochs is not None and self.ledger.epoch >= b.epochs - 1e-9)
        if b.seconds is None:
            return done  # steps and epochs advance in lockstep on every rank
        done = done or self.train_seconds() >= b.seconds
        return agree_any(done, self.device) if self.dist.world_size > 1 else done

    def batches(self, group: int | None = None) -> Iterator[Any]:
        """Training batches on the run's device, epoch after epoch, until the budget is spent.

        ``group=k`` yields lists of k batches that make one step (simulated ranks, gradient
        accumulation); samples count per batch, the budget per step.
        """
        size = group or 1
        per_epoch = self.steps_per_epoch / size
        epoch_index, pending = 0, []
        while not self.exhausted:
            sampler = getattr(self.train_loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch_index)
            drawn = 0
            for batch in self.train_loader:
                pending.append(self.to_device(batch))
                if len(pending) < size:
                    continue
                if self.exhausted:
                    return
                drawn += 1
                self._advance(pending, epoch_index + (drawn - 1) / per_epoch)
                yield pending if group else pending[0]
                pending = []
                self._after_step()
            epoch_index += 1
            self.ledger.epoch = float(epoch_index)
            if not self.spec.eval_every:
                self.evaluate_point()

    def _advance(self, batches: list[Batch], epoch: float) -> None:
        self.ledger.steps += 1
        self.ledger.samples += sum(batch_len(b) for b in batches)
        self.ledger.epoch = epoch

    def _after_step(self) -> None:
        every = self.spec.eval_every
        if every and self.ledger.steps % every == 0:
            self.evaluate_point()
        if self.progress is not None:
            import time

            now = time.perf_counter()
            if now - self.last_progress > 0.5:
                self.last_progress = now
                self.progress(self.ledger.steps, self.planned_steps)

    # -- what a method reports ----------------------------------------------------------------
    def step(self, loss: torch.Tensor | float | None, batch: Batch | None = None, *,
             updates: int = 1) -> None:
        """Report one step: its loss (raises :class:`Diverged` when not finite) and the
        gradient updates it made (0 for a step that changes no weights). Samples and the step
        itself were counted when ``batches()`` handed the batch out; ``batch`` is accepted for
        readability only."""
        self.ledger.reported += 1
        self.ledger.gradient_updates += updates
        if loss is not None:
            value = loss.item() if torch.is_tensor(loss) else float(loss)
            self.ledger.last_loss = value
            if not math.isfinite(value):
                raise Diverged(f"loss became {value} at step {self.ledger.steps}")

    def count(self, samples: int = 0, updates: int = 0, steps: int = 1) -> None:
        """Count work done outside ``batches()`` (a search's trials) without a loss check."""
        self.ledger.reported += 1
        self.ledger.steps += steps
        self.ledger.samples += samples
        self.ledger.gradient_updates += updates

    @property
    def work_dir(self) -> Path:
        """A directory that belongs to this run_key and survives a crash (search checkpoints)."""
        path = self.work_root / self.spec.run_key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def adopt(self, row: dict[str, Any]) -> None:
        """Make a trial's result (a row from ``run_child``) the result of this search run."""
        if row.get("status") != "ok":
            raise ValueError(f"cannot adopt trial {row.get('run_key')}: status {row.get('status')}")
        self.ledger.adopted = row

    def log_point(self, metrics: dict[str, float], split: str = "val") -> None:
        """A curve point at the current training cost (search methods: best-so-far per trial)."""
        train_s, train_j = self.clock.peek(Phase.TRAIN)
        self.ledger.point(split, metrics, train_s, train_j)
        self.check_target(metrics, train_s, train_j)

    def record(self, **stats: Any) -> None:
        """Method statistics for the result row (stored as ``x_<name>`` columns)."""
        self.ledger.stats.update(stats)

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, split: str = "val", model: nn.Module | None = None) -> dict[str, float]:
        """Evaluate in the eval window (not charged to training); restores the train window."""
        resume = self.clock.current
        self.clock.switch(Phase.EVAL)
        try:
            return evaluate_model(self.task, model or self.model, split)
        finally:
            self.clock.switch(resume)

    def evaluate_point(self) -> dict[str, float]:
        """A learning-curve point on the validation split."""
        metrics = self.evaluate("val")
        train_s, train_j = self.clock.train_so_far()
        self.ledger.point("val", metrics, train_s, train_j)
        self.check_target(metrics, train_s, train_j)
        return metrics

    def check_target(self, metrics: dict[str, float], train_s: float, train_j: float | None) -> None:
        """Record the first point at which the preset's validation target was reached."""
        preset = type(self.task).presets[self.spec.preset]
        value = metrics.get(type(self.task).primary_metric)
        if self.ledger.target_hit or preset.target is None or value is None:
            return
        hib = type(self.task).higher_is_better()
        if (value >= preset.target) if hib else (value <= preset.target):
            self.ledger.target_hit = (train_s, train_j)


def agree_any(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any: all ranks stop at the same step (each rank's
    own clock would stop them at different steps, and their collectives would mismatch)."""
    import torch.distributed as tdist

    if not tdist.is_initialized():
        return flag
    on = device if tdist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([1.0 if flag else 0.0], device=on)
    tdist.all_reduce(value, op=tdist.ReduceOp.MAX)
    return bool(value.item() > 0)


def evaluate_model(task: Task, model: nn.Module, split: str) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            metrics = {k: float(v) for k, v in task.evaluate(model, split).items()}
    finally:
        model.train(was_training)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:  # a NaN metric was stored as ok and cached as done; it fails the run instead
        value = "NaN" if math.isnan(metrics[bad[0]]) else str(metrics[bad[0]])
        raise NonFiniteMetric(f"metric {bad[0]} is {value} on split {split} (data?)")
    return metrics


class NonFiniteMetric(RuntimeError):
    """A metric that is not a number: a failed run (bad data, mostly), never an ``ok`` one."""


def batch_len(batch: Batch) -> int:
    if "index" in batch and hasattr(batch["index"], "__len__"):
        return len(batch["index"])
    for value in batch.values():
        if torch.is_tensor(value) and value.dim() > 0:
            return int(value.shape[0])
    return 0
