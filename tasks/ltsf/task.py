"""The LTSF task: multivariate forecasting with the standard splits, MSE/MAE on scaled values."""

from __future__ import annotations

from functools import lru_cache
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from joulebench.harness.params import Param
from joulebench.harness.registry import register_task
from joulebench.harness.task import Batch, Preset, Task
from joulebench.tasks.ltsf import data
from joulebench.tasks.ltsf.zoo import MODELS

EVAL_BATCH = 256


@lru_cache(maxsize=8)
def _splits(dataset: str, data_dir: str, n_rows: int, seed: int, seq_len: int, label_len: int,
            pred_len: int, features: str, target: str, mtime: float):
    """Parsed, scaled splits, cached per worker so a campaign reads each file once."""
    if dataset == "synthetic":
        frame, rule = data.make_ett_like(n_rows, seed), "ratio"
    else:
        frame, rule = data.read_csv(data.locate(dataset, data_dir)), data.DATASETS[dataset][1]
    return data.build_splits(frame, rule, seq_len, label_len, pred_len, features, target)


@register_task
class LTSF(Task):
    name = "ltsf"
    description = "Long-term time-series forecasting on the LTSF benchmark data (MSE/MAE, scaled)"
    params = {
        "dataset": Param("synthetic", choices=("synthetic", *data.DATASETS)),
        "data_dir": Param("", help="directory holding the dataset's CSV (full preset)"),
        "n_rows": Param(2000, low=200, high=10_000_000, help="rows of the synthetic series"),
        "data_seed": Param(0, help="seed of the synthetic series (fixed across run seeds)"),
        "features": Param("M", choices=("M", "S"), help="M: all channels; S: target only"),
        "target": Param("OT"),
        "seq_len": Param(96, low=8, high=4096),
        "label_len": Param(48, low=0, high=4096),
        "pred_len": Param(96, low=1, high=4096),
        "model": Param("dlinear", choices=tuple(MODELS)),
        "batch_size": Param(32, low=1, high=65536),
        "kernel_size": Param(25, low=3, high=201),
        "individual": Param(False),
        "d_model": Param(64, low=8, high=2048),
        "n_heads": Param(4, low=1, high=64),
        "e_layers": Param(2, low=1, high=12),
        "d_layers": Param(1, low=1, high=12),
        "d_ff": Param(128, low=8, high=8192),
        "dropout": Param(0.05, low=0.0, high=0.9),
    }
    presets = {
        "tiny": Preset(
            params={"n_rows": 1200, "seq_len": 48, "label_len": 24, "pred_len": 24, "batch_size": 32,
                    "d_model": 32, "d_ff": 64, "e_layers": 1},
            budget={"steps": 60}, eval_every=20, target=0.6, timeout_s=120,
            description="1,200 synthetic hourly rows, 48 → 24; seconds on one core"),
        "small": Preset(
            params={"n_rows": 17420, "seq_len": 336, "label_len": 48, "pred_len": 96, "batch_size": 32},
            budget={"epochs": 3}, target=0.5, timeout_s=1800,
            description="ETTh-sized synthetic series (17,420 rows), 336 → 96; minutes on a CPU"),
        "full": Preset(
            params={"dataset": "ETTh1", "seq_len": 336, "label_len": 48, "pred_len": 96,
                    "batch_size": 32},
            budget={"epochs": 10}, target=0.45, timeout_s=6 * 3600,
            method_defaults={"backprop": {"lr": 0.005, "schedule": "halve_per_epoch"}},
            description="the published setup on a real CSV (DLinear protocol: 10 epochs, Adam)"),
    }
    metrics = {"mse": False, "mae": False}
    primary_metric = "mse"
    capabilities = frozenset({"sample_index", "regression", "functional"})

    def setup(self) -> None:
        hp = self.hp
        mtime = 0.0
        if hp.dataset != "synthetic":
            mtime = data.locate(hp.dataset, hp.data_dir).stat().st_mtime
        self.splits, self.scaler = _splits(hp.dataset, hp.data_dir, hp.n_rows, hp.data_seed,
                                           hp.seq_len, hp.label_len, hp.pred_len, hp.features,
                                           hp.target, mtime)
        self.channels = self.splits["train"].values.shape[1]

    def train_dataset(self) -> Dataset:
        return self.splits["train"]

    def build_model(self) -> nn.Module:
        return MODELS[self.hp.model](self.hp, self.channels)

    def forward(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(batch["x"], batch["x_mark"], batch["y_mark"])

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return nn.functional.mse_loss(self.forward(model, batch), batch["y"])

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        loader = DataLoader(self.splits[split], batch_size=EVAL_BATCH, shuffle=False)
        se = ae = count = 0.0
        for batch in loader:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            err = self.forward(model, batch) - batch["y"]
            se += float(err.pow(2).sum())
            ae += float(err.abs().sum())
            count += err.numel()
        return {"mse": se / count, "mae": ae / count}

    def model_name(self) -> str:
        return self.hp.model

