"""The Task contract: a workload owns its data, model, loss, evaluation and targets.

As in MLCommons AlgoPerf, the task fixes everything a method must not change, so that two methods
on the same task and preset are compared on equal terms. A method never sees data loading code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from joulebench.harness.params import Hyper, Param

if TYPE_CHECKING:  # torch is imported where a run needs it, not to list or resolve tasks
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

Batch = dict[str, Any]
"""A batch is a dict of tensors; training batches carry ``index`` (sample ids) beside the inputs."""

MAX_AUTO_WORKERS = 8
WORKERS = Param(-1, low=-1, high=256,
                help="DataLoader worker processes; -1: from the run's cores (none when the split is "
                     "in memory)")
"""Declared once, here; a task whose data is read from disk puts it in its ``params``."""


def auto_workers(cores: int | None = None) -> int:
    """Loader workers for a run that has ``cores`` (default: this process's CPU affinity): one core
    stays with the training process, at most ``MAX_AUTO_WORKERS`` decode."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(MAX_AUTO_WORKERS, cores - 1))


@dataclass(frozen=True)
class Preset:
    """A named scale of a task.

    ``tiny`` runs in seconds on one CPU core (tests), ``small`` in minutes on a CPU (the demo),
    ``full`` is the published setup on real data. ``target`` is the validation value of the
    primary metric that counts as "reached" for time- and energy-to-target.
    ``method_defaults`` holds per-method parameter defaults that differ per task (learning rates
    of forward-gradient methods differ from backprop's by orders of magnitude).
    """

    params: Mapping[str, Any] = field(default_factory=dict)
    budget: Mapping[str, float] = field(default_factory=lambda: {"epochs": 1})
    target: float | None = None
    eval_every: int | None = None
    timeout_s: float = 600.0
    method_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""


class Task:
    """Base class of every task. Subclasses set the class attributes and implement the methods.

    Lifecycle inside one run (the runner owns timing and energy of each phase):
    ``setup()`` (setup window) → ``build_model()`` → training through the method, which calls
    ``loss()`` on batches from ``train_loader()`` → ``evaluate()`` on "val" and "test" (eval window).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    presets: ClassVar[dict[str, Preset]] = {}
    metrics: ClassVar[dict[str, bool]] = {}
    """metric name → True when higher is better."""
    primary_metric: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset()
    """What methods may rely on, e.g. "sample_index", "classification", "sequential_blocks"."""

    def __init__(self, hp: Mapping[str, Any], preset: str, seed: int, device: torch.device,
                 rank: int = 0, world_size: int = 1) -> None:
        self.hp = hp if isinstance(hp, Hyper) else Hyper(hp)
        self.preset = preset
        self.seed = seed
        self.device = device
        self.rank = rank
        self.world_size = world_size

    # -- to implement -------------------------------------------------------------------------
    def setup(self) -> None:
        """Load or generate the data; never downloads. Raise FileNotFoundError naming what to put where."""

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def sample_losses(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Each sample's loss (shape ``[batch]``), whose mean is ``loss``. Optional: a task that
        implements it declares the capability "sample_losses". Methods that need each sample's
        share of the loss call it (forward gradients with a tangent shared over the batch take
        one directional derivative per sample, which a batch-mean loss cannot give)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Quality metrics on "val" or "test"; the runner has already put the model in eval mode."""
        raise NotImplementedError

    # -- defaults a task may override ---------------------------------------------------------
    def model_name(self) -> str:
        return str(self.hp.get("model", self.name))

    @property
    def batch_size(self) -> int:
        return int(self.hp.get("batch_size", 32))

    def model_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The positional inputs of one forward pass of this task's model on a batch: what a
        method that calls the model itself (pruning's MAC count and latency) passes it; the
        batch's keys are the task's own. Default: ``(batch["x"],)``."""
        return (batch["x"],)

    def on_device(self, batch: Batch) -> Batch:
        """A training batch once it is on the run's device: what the task does there rather than
        in its loader workers (decoding, augmentation on the accelerator). Default: nothing."""
        return batch

    def data_in_memory(self) -> bool:
        """True when batches come from memory (no worker pays off); tasks reading from disk say False."""
        return True

    def loader_workers(self) -> int:
        """``workers`` when the task declares it (-1: ``auto_workers``), else none."""
        if "workers" not in self.params:
            return 0
        workers = int(self.hp.workers)
        if workers >= 0:
            return workers
        return 0 if self.data_in_memory() else auto_workers()

    def loader_options(self, train: bool = True) -> dict[str, Any]:
        """DataLoader settings shared by the train and eval loaders: workers, page-locked host
        memory on CUDA (asynchronous copies), two batches prefetched per worker, and training
        workers kept across epochs (their start-up and the dataset's open files are paid once)."""
        workers = self.loader_workers()
        options: dict[str, Any] = {"num_workers": workers, "pin_memory": self.device.type == "cuda"}
        if workers:
            options.update(prefetch_factor=2, persistent_workers=train)
        return options

    def train_loader(self, sampler: Any = None, generator: torch.Generator | None = None) -> DataLoader:
        from torch.utils.data import DataLoader

        data = self.train_dataset()
        return DataLoader(data, batch_size=self.batch_size, shuffle=sampler is None,
                          sampler=sampler, generator=generator, drop_last=len(data) > self.batch_size,
                          **self.loader_options(train=True))

    def eval_loader(self, data: Dataset, batch_size: int | None = None) -> DataLoader:
        """In order, every sample, with the task's loader options (workers start per evaluation)."""
        from torch.utils.data import DataLoader

        return DataLoader(data, batch_size=batch_size or self.batch_size, shuffle=False,
                          **self.loader_options(train=False))

    data_params: ClassVar[tuple[str, ...]] = ()
    """Parameters that name files on the user's disk; only when one is set is ``data_files``
    asked (so resolving a spec on generated data imports nothing of the task)."""

    @classmethod
    def data_files(cls, hp: Mapping[str, Any], preset: str) -> list[Path]:
        """Files or directories on the user's disk this run reads (their content enters the
        run_key). Generated data needs none: the code that generates it is in the key."""
        return []

    @classmethod
    def capabilities_for(cls, hp: Mapping[str, Any]) -> frozenset[str]:
        """Capabilities can depend on parameters (a model choice, say); default: the class's."""
        return cls.capabilities

    @classmethod
    def higher_is_better(cls, metric: str | None = None) -> bool:
        return cls.metrics.get(metric or cls.primary_metric, False)
