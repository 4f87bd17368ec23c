"""What a method sees of a run: the model, the data, the loss, the budget, a step logger.

A method reads like this (the runner times, meters, evaluates and stores around it)::

    for batch in ctx.batches():          # stops when the budget is spent
        loss = ctx.loss(ctx.model, batch)
        ...                              # compute an update however the method likes
        ctx.step(loss, batch)            # counts samples and updates, checks for NaN, evaluates
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from joulebench.harness.task import Batch, Hyper, Task

if TYPE_CHECKING:
    from joulebench.harness.phases import PhaseClock
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
class TrainContext:
    spec: ResolvedSpec
    task: Task
    model: nn.Module
    hp: Hyper
    device: torch.device
    clock: PhaseClock
    dist: DistInfo = field(default_factory=DistInfo)
    run_child: Callable[..., dict[str, Any]] | None = None
    """For search methods: ``run_child(method=..., method_params=..., task_params=...)`` runs a
    trial as a child run (stored with this run's key as ``parent_key``) and returns its row."""

    steps: int = 0
    samples: int = 0
    gradient_updates: int = 0
    epoch: float = 0.0
    curves: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    target_hit: tuple[float, float | None] | None = None
    adopted: dict[str, Any] | None = None
    """A search method's chosen trial row; its metrics become this run's result."""
    last_loss: float | None = None
    work_root: Path = Path("results") / "work"
    progress: Callable[[int, int | None], None] | None = None
    """Called at most twice a second with (steps done, planned steps) to drive a progress bar."""
    _loader: Any = None
    _last_progress: float = 0.0
    _budget: tuple | None = None
    _steps_per_epoch: int | None = None

    # -- data and loss ------------------------------------------------------------------------
    @property
    def global_batch(self) -> int:
        """Samples per optimiser step over all ranks (what linear learning-rate scaling uses)."""
        return self.task.batch_size * self.dist.world_size

    @property
    def train_loader(self):
        if self._loader is None:
            self._loader = self._make_loader()
        return self._loader

    def _make_loader(self):
        generator = torch.Generator().manual_seed(self.spec.seed)
        sampler = None
        if self.dist.world_size > 1:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(self.task.train_dataset(), num_replicas=self.dist.world_size,
                                         rank=self.dist.rank, shuffle=True, seed=self.spec.seed)
        return self.task.train_loader(sampler=sampler, generator=generator)

    @property
    def steps_per_epoch(self) -> int:
        if self._steps_per_epoch is None:
            self._steps_per_epoch = max(len(self.train_loader), 1)
        return self._steps_per_epoch

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
        if self.device.type == "cpu":
            return batch  # loaders yield CPU tensors: nothing to move
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                for k, v in batch.items()}

    # -- budget -------------------------------------------------------------------------------
    @property
    def exhausted(self) -> bool:
        steps, epochs, seconds = self._limits
        return (steps is not None and self.steps >= steps
                or epochs is not None and self.epoch >= epochs - 1e-9
                or seconds is not None and self.train_seconds() >= seconds)

    @property
    def _limits(self) -> tuple[int | None, float | None, float | None]:
        if self._budget is None:
            b = self.spec.budget
            self._budget = (b.steps, b.epochs, b.seconds)
        return self._budget

    def train_seconds(self) -> float:
        done = self.clock.seconds["train"]
        if self.clock.current == "train" and self.clock._last is not None:
            done += time.perf_counter() - self.clock._last.t
        return done

    def batches(self) -> Iterator[Batch]:
        """Training batches on the run's device, epoch after epoch, until the budget is spent."""
        epoch_index = 0
        while not self.exhausted:
            sampler = getattr(self.train_loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch_index)
            for i, batch in enumerate(self.train_loader):
                if self.exhausted:
                    return
                self.epoch = epoch_index + i / self.steps_per_epoch
                yield self.to_device(batch)
            epoch_index += 1
            self.epoch = float(epoch_index)
            if self._eval_per_epoch():
                self.evaluate_point()

    # -- logging ------------------------------------------------------------------------------
    def step(self, loss: torch.Tensor | float | None, batch: Batch | None = None, *,
             samples: int | None = None, updates: int = 1) -> None:
        """Record one training step; raises :class:`Diverged` when the loss is not finite."""
        self.steps += 1
        self.gradient_updates += updates
        if samples is None and batch is not None:
            samples = _batch_len(batch)
        self.samples += samples or 0
        if loss is not None:
            value = loss.item() if torch.is_tensor(loss) else float(loss)
            self.last_loss = value
            if not math.isfinite(value):
                raise Diverged(f"loss became {value} at step {self.steps}")
        every = self.spec.eval_every
        if every and self.steps % every == 0:
            self.evaluate_point()
        if self.progress is not None:
            now = time.perf_counter()
            if now - self._last_progress > 0.5:
                self._last_progress = now
                self.progress(self.steps, self.planned_steps)

    def count(self, samples: int = 0, updates: int = 0, steps: int = 1) -> None:
        """Count work done elsewhere (a search's trials) without a loss check or evaluation."""
        self.steps += steps
        self.samples += samples
        self.gradient_updates += updates

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
        self.adopted = row

    def log_point(self, metrics: dict[str, float], split: str = "val") -> None:
        """A curve point at the current training cost (search methods: best-so-far per trial)."""
        train_s, train_j = self.clock.peek("train")
        self.curves.append({"split": split, "step": self.steps, "epoch": self.epoch,
                            "samples": self.samples, "train_s": train_s, "train_energy_j": train_j,
                            "metrics_json": metrics})
        self._check_target(metrics, train_s, train_j)

    def record(self, **stats: Any) -> None:
        """Method statistics for the result row (stored as ``x_<name>`` columns)."""
        self.stats.update(stats)

    def _eval_per_epoch(self) -> bool:
        return not self.spec.eval_every

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, split: str = "val", model: nn.Module | None = None) -> dict[str, float]:
        """Evaluate in the eval window (not charged to training); restores the train window."""
        resume = self.clock.current
        self.clock.switch("eval")
        try:
            return evaluate_model(self.task, model or self.model, split)
        finally:
            self.clock.switch(resume)

    def evaluate_point(self) -> dict[str, float]:
        """A learning-curve point on the validation split."""
        metrics = self.evaluate("val")
        train_s, train_j = self.clock.train_so_far()
        self.curves.append({
            "split": "val", "step": self.steps, "epoch": self.epoch, "samples": self.samples,
            "train_s": train_s, "train_energy_j": train_j, "metrics_json": metrics,
        })
        self._check_target(metrics, train_s, train_j)
        return metrics

    def _check_target(self, metrics: dict[str, float], train_s: float, train_j: float | None) -> None:
        preset = type(self.task).presets[self.spec.preset]
        value = metrics.get(type(self.task).primary_metric)
        if self.target_hit or preset.target is None or value is None:
            return
        hib = type(self.task).higher_is_better()
        if (value >= preset.target) if hib else (value <= preset.target):
            self.target_hit = (train_s, train_j)


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


def _batch_len(batch: Batch) -> int:
    if "index" in batch and hasattr(batch["index"], "__len__"):
        return len(batch["index"])
    for value in batch.values():
        if torch.is_tensor(value) and value.dim() > 0:
            return int(value.shape[0])
    return 0
