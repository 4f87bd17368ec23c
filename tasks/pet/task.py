"""The PET coincidence task: find the photon pairs of positron annihilations in detector hits.

Data are simulated (``simulate.py``) unless ``data_dir`` names a folder holding ``train.npz``,
``val.npz`` and ``test.npz`` in this task's format (``data_cards/pet-sim.md``). Models: ``petnet``
(the spiking network, trained by any gradient method) and ``sorter`` (the classical time-window
sorter, no trainable parameters; run it with ``--method time_window_sorter``).
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from joulebench.harness.params import Param
from joulebench.harness.registry import register_task
from joulebench.harness.task import Batch, Preset, Task
from joulebench.tasks.pet import metrics as pet_metrics
from joulebench.tasks.pet.data import PETDataset, read_npz
from joulebench.tasks.pet.model import PETNet, decode, petnet_loss
from joulebench.tasks.pet.simulate import GEOMETRIES, DetectorConfig, SimData, simulate
from joulebench.tasks.pet.sorter import TimeWindowSorter

EVAL_BATCH = 256
SPLITS = ("train", "val", "test")
SPLIT_SEED = {"train": 0, "val": 1, "test": 2}
PETNET = {"model": ("petnet",)}
SORTER = {"model": ("sorter",)}


@lru_cache(maxsize=4)
def _simulated(cfg: DetectorConfig, sizes: tuple[int, int, int], data_seed: int) -> dict[str, SimData]:
    return {split: simulate(cfg, n, seed=data_seed * 1000 + SPLIT_SEED[split])
            for split, n in zip(SPLITS, sizes, strict=True)}


@lru_cache(maxsize=4)
def _from_files(data_dir: str, mtimes: tuple[float, ...]) -> dict[str, SimData]:
    return {split: read_npz(Path(data_dir) / f"{split}.npz") for split in SPLITS}


def locate(data_dir: str) -> list[Path]:
    root = Path(data_dir).expanduser()
    paths = [root / f"{split}.npz" for split in SPLITS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"PET data: {', '.join(missing)} missing in {root}. Put train.npz, val.npz and test.npz "
            "(joulebench PET format, see data_cards/pet-sim.md) there, or write simulated ones with "
            f"`python -m joulebench.tasks.pet.make_data --out {root}`; leave data_dir empty to "
            "simulate in memory.")
    return paths


@register_task
class PET(Task):
    name = "pet"
    description = "PET photon-coincidence detection on simulated ring-detector hits (coincidence F1)"
    params = {
        "data_dir": Param("", help="folder with train/val/test.npz; empty: simulate in memory"),
        "geometry_preset": Param("small", choices=tuple(GEOMETRIES),
                                 help="rings × crystals × steps of the simulated detector"),
        "activity": Param(0.08, low=0.0, high=10.0, help="annihilations per time step (pile-up)"),
        "efficiency": Param(0.8, low=0.0, high=1.0, help="detection probability per photon"),
        "spread": Param(2, low=0, high=64, help="partner crystal within ± spread of opposite"),
        "ring_spread": Param(0.5, low=0.0, high=8.0, help="sd of the partner's ring offset"),
        "max_delay": Param(3, low=0, high=32, help="per-crystal delays are 0..max_delay steps"),
        "jitter": Param(0.3, low=0.0, high=8.0, help="sd of the time jitter in steps"),
        "scatter": Param(0.1, low=0.0, high=1.0, help="probability a detected photon scattered"),
        "randoms": Param(0.002, low=0.0, high=10.0, help="random single hits per step"),
        "n_train": Param(4000, low=1, high=10_000_000),
        "n_val": Param(500, low=1, high=10_000_000),
        "n_test": Param(1000, low=1, high=10_000_000),
        "data_seed": Param(0, help="seed of the simulation (fixed across run seeds)"),
        "model": Param("petnet", choices=("petnet", "sorter")),
        "geometry": Param(True, help="PETNet: each hit also marks its opposite crystals, and the "
                                     "readout pairs opposite crystals only; False: no geometry anywhere", applies=PETNET),
        "arch": Param("dense", choices=("dense", "local"),
                      help="PETNet: fully connected (the authors'), or weights shared across "
                           "crystals with a partner channel (variant)", applies=PETNET),
        "hidden": Param(480, low=1, high=8192,
                        help="PETNet hidden neurons (the authors': 480; per crystal if local)", applies=PETNET),
        "taps": Param(1, low=1, high=64,
                      help="PETNet: steps of synaptic delay seen per input (1: none, the authors')", applies=PETNET),
        "beta": Param(0.8, low=0.0, high=1.0, help="initial membrane decay (learned)", applies=PETNET),
        "surrogate": Param("fast_sigmoid", choices=("fast_sigmoid", "atan", "sigmoid"), applies=PETNET),
        "slope": Param(5.0, low=0.1, high=1000.0, help="surrogate gradient slope", applies=PETNET),
        "w_count": Param(0.1, low=0.0, high=100.0, help="weight of the spike-count loss", applies=PETNET),
        "w_time": Param(1.0, low=0.0, high=100.0, help="weight of the spike-timing loss", applies=PETNET),
        "tau": Param(2.0, low=0.1, high=100.0, help="timing-loss kernel time constant (steps)", applies=PETNET),
        "window": Param(-1, low=-1, high=1000, help="sorter window in steps; -1: max_delay + 1", applies=SORTER),
        "accept": Param(-1, low=-1, high=1000,
                        help="sorter geometric acceptance (crystals from opposite); -1: off", applies=SORTER),
        "time_tol": Param(1, low=0, high=100, help="time match of a true positive (steps)"),
        "batch_size": Param(32, low=1, high=65536),
    }
    presets = {
        "tiny": Preset(
            params={"geometry_preset": "tiny", "n_train": 256, "n_val": 64, "n_test": 64,
                    "activity": 0.05, "hidden": 64, "batch_size": 32},
            budget={"steps": 80}, eval_every=40, target=0.5, timeout_s=120,
            method_defaults={"backprop": {"lr": 0.02}},
            description="2 rings × 16 crystals, 32 steps; seconds on one core"),
        "small": Preset(
            params={"geometry_preset": "small", "n_train": 4000, "n_val": 500, "n_test": 1000,
                    "activity": 0.08, "batch_size": 32},
            budget={"epochs": 8}, target=0.85, timeout_s=3600,
            method_defaults={"backprop": {"lr": 0.005}},
            description="4 rings × 32 crystals, 64 steps, ~2.4 true pairs per sample (pile-up); minutes"),
        "full": Preset(
            params={"geometry_preset": "clinical", "n_train": 20000, "n_val": 2000,
                    "n_test": 2000, "activity": 0.5, "spread": 4,
                    "batch_size": 64},
            budget={"epochs": 20}, target=0.9, timeout_s=12 * 3600,
            method_defaults={"backprop": {"lr": 0.001}},
            description="clinical size (16 rings × 180 crystals); simulated, or data_dir files"),
    }
    metrics = {"f1": True, "precision": True, "recall": True, "events_per_s": True,
               "samples_per_s": True}
    """events_per_s: detector hits (single events) classified per second of inference."""
    primary_metric = "f1"
    capabilities = frozenset({"sample_index"})

    @classmethod
    def capabilities_for(cls, hp) -> frozenset[str]:
        if hp.get("model") == "sorter":
            return frozenset({"sample_index", "window_sorter"})
        return cls.capabilities

    # -- data ---------------------------------------------------------------------------------
    def detector(self) -> DetectorConfig:
        hp = self.hp
        return DetectorConfig(**GEOMETRIES[hp.geometry_preset], activity=hp.activity,
                              efficiency=hp.efficiency, spread=hp.spread,
                              ring_spread=hp.ring_spread, max_delay=hp.max_delay,
                              jitter=hp.jitter, scatter=hp.scatter, randoms=hp.randoms)

    data_params = ("data_dir",)

    @classmethod
    def data_files(cls, hp, preset):
        if not hp.get("data_dir"):
            return []
        return [Path(hp["data_dir"]).expanduser() / f"{split}.npz" for split in SPLITS]

    def setup(self) -> None:
        hp = self.hp
        if hp.data_dir:
            paths = locate(hp.data_dir)
            self.splits = _from_files(str(Path(hp.data_dir).expanduser()),
                                      tuple(p.stat().st_mtime for p in paths))
            self.cfg = self.splits["train"].config
        else:
            self.cfg = self.detector()
            self.splits = _simulated(self.cfg, (hp.n_train, hp.n_val, hp.n_test), hp.data_seed)
        self.datasets = {k: PETDataset(v) for k, v in self.splits.items()}

    def train_dataset(self) -> Dataset:
        return self.datasets["train"]

    # -- model and loss -----------------------------------------------------------------------
    def sorter_window(self) -> int:
        return int(self.hp.window) if self.hp.window >= 0 else self.cfg.max_delay + 1

    def build_model(self) -> nn.Module:
        hp = self.hp
        if hp.model == "sorter":
            return TimeWindowSorter(self.sorter_window(), self.cfg.crystals, int(hp.accept))
        return PETNet(self.cfg, hidden=hp.hidden, taps=hp.taps, geometry=hp.geometry,
                      beta=hp.beta, surrogate_name=hp.surrogate, slope=hp.slope,
                      reach=self.cfg.spread, arch=hp.arch)

    def model_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        return (batch["hits"],)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        if isinstance(model, TimeWindowSorter):
            raise TypeError("the time-window sorter has no loss; run it with "
                            "--method time_window_sorter")
        out = model(batch["hits"])
        return petnet_loss(out, batch["target"], self.hp.w_count, self.hp.w_time, self.hp.tau)

    # -- evaluation ---------------------------------------------------------------------------
    def predict(self, model: nn.Module, split: str) -> tuple[np.ndarray, float]:
        """Predicted (sample, a, b, step) coincidences of a split and the seconds it took."""
        data = self.datasets[split]
        inner = getattr(model, "module", model)
        start = time.perf_counter()
        if isinstance(inner, TimeWindowSorter):
            pred = inner.predict_sparse(data.data.hits)
        else:
            parts = []
            for lo in range(0, len(data), EVAL_BATCH):
                hi = min(lo + EVAL_BATCH, len(data))
                spikes = model(data.dense_hits(lo, hi).to(self.device))
                parts.append(decode(spikes, self.cfg.crystals, offset=lo,
                                    max_dev=self.cfg.spread + 1 if self.hp.geometry else None))
            pred = np.concatenate(parts) if parts else np.zeros((0, 4), dtype=np.int64)
        return pred, time.perf_counter() - start

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        pred, seconds = self.predict(model, split)
        data = self.splits[split]
        tp, fp, fn = pet_metrics.match(pred, pet_metrics.truth_table(data.pairs), int(self.hp.time_tol))
        out = pet_metrics.prf(tp, fp, fn)
        seconds = max(seconds, 1e-9)
        out.update(tp=tp, fp=fp, fn=fn, events_per_s=len(data.hits) / seconds,
                   samples_per_s=data.n_samples / seconds)
        return out

    def model_name(self) -> str:
        if self.hp.model == "sorter":
            return "sorter"
        return ("petnet" + ("" if self.hp.arch == "dense" else "-local")
                + ("" if self.hp.geometry else "-nogeo"))
