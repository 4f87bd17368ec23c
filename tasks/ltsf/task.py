"""The LTSF task: multivariate forecasting with the standard splits, MSE/MAE on scaled values."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from joulebench.harness.params import Param
from joulebench.harness.registry import register_task
from joulebench.harness.task import Batch, Preset, Task
from joulebench.tasks.ltsf import calendar, data, recycle
from joulebench.tasks.ltsf.zoo import MODELS

EVAL_BATCH = 256
MAPE_EPS = 1e-6
"""Target values with a smaller magnitude (unscaled) are left out of MAPE."""


@lru_cache(maxsize=8)
def _splits(dataset: str, data_dir: str, n_rows: int, seed: int, seq_len: int, label_len: int,
            pred_len: int, features: str, target: str, mtime: float, holiday_country: str = ""):
    """Parsed, scaled splits, cached per worker so a campaign reads each file once.

    Returns the splits (items also carry day types, see ``calendar.DayTypedWindows``), the scaler,
    and calendar facts of the series: its primary cycle and rows per day.
    """
    if dataset == "synthetic":
        frame, rule = data.make_ett_like(n_rows, seed), "ratio"
    else:
        frame, rule = data.read_csv(data.locate(dataset, data_dir)), data.DATASETS[dataset][1]
    splits, scaler = data.build_splits(frame, rule, seq_len, label_len, pred_len, features, target)
    days = calendar.day_types(frame["date"], holiday_country)
    ranges = data.borders(len(frame), rule, seq_len)
    splits = {split: calendar.DayTypedWindows(ds, days[ranges[split][0]:ranges[split][1]])
              for split, ds in splits.items()}
    info = {"cycle": calendar.infer_cycle(frame["date"]),
            "rows_per_day": calendar.rows_per_day(frame["date"])}
    return splits, scaler, info


ATTENTION = ("transformer", "patchtst", "autoformer", "recycle")
PROFILE = ("recycle", "rhp")
SYNTHETIC = {"dataset": ("synthetic",)}
REAL = {"dataset": tuple(data.DATASETS)}


def for_models(*models: str) -> dict[str, tuple[str, ...]]:
    """``applies`` for a parameter that only some models of the zoo read."""
    unknown = set(models) - set(MODELS)
    assert not unknown, f"for_models names unknown models {unknown}"
    return {"model": models}


@register_task
class LTSF(Task):
    name = "ltsf"
    description = "Long-term time-series forecasting on the LTSF benchmark data (MSE/MAE, scaled)"
    params = {
        "dataset": Param("synthetic", choices=("synthetic", *data.DATASETS)),
        "data_dir": Param("", help="directory holding the dataset's CSV (full preset)", applies=REAL),
        "n_rows": Param(2000, low=200, high=10_000_000, help="rows of the synthetic series",
                        applies=SYNTHETIC),
        "data_seed": Param(0, help="seed of the synthetic series (fixed across run seeds)",
                           applies=SYNTHETIC),
        "features": Param("M", choices=("M", "S"), help="M: all channels; S: target only"),
        "target": Param("OT"),
        "seq_len": Param(96, low=8, high=4096),
        "label_len": Param(48, low=0, high=4096),
        "pred_len": Param(96, low=1, high=4096),
        "model": Param("dlinear", choices=tuple(MODELS)),
        "batch_size": Param(32, low=1, high=65536),
        "kernel_size": Param(25, low=3, high=201, applies=for_models("dlinear", "autoformer")),
        "individual": Param(False, applies=for_models("dlinear")),
        "d_model": Param(64, low=8, high=2048, applies=for_models(*ATTENTION)),
        "n_heads": Param(4, low=1, high=64, applies=for_models(*ATTENTION)),
        "e_layers": Param(2, low=1, high=12, applies=for_models(*ATTENTION, "mlp")),
        "d_layers": Param(1, low=1, high=12, applies=for_models("transformer", "autoformer", "recycle")),
        "d_ff": Param(128, low=8, high=8192, applies=for_models(*ATTENTION, "mlp")),
        "activation": Param("relu", choices=("relu", "tanh"), applies=for_models("mlp"),
                            help="mlp: hidden activation (feedback methods use tanh by default "
                                 "through their own activation parameter)"),
        "dropout": Param(0.05, low=0.0, high=0.9, applies=for_models(*ATTENTION)),
        "cycle_len": Param(0, low=0, high=100_000,
                           help="primary cycle in rows (ReCycle, seasonal-naive, MASE); 0: from the "
                                "timestamps (24 hourly, 96 for 15 min, 7 daily, 52 weekly)"),
        "rhp_cycles": Param(3, low=1, high=365, help="cycles averaged by the recent historic profile",
                            applies=for_models(*PROFILE)),
        "rhp": Param("rolling", choices=recycle.PROFILES, applies=for_models(*PROFILE),
                     help="ReCycle/RHP profile: rolling per day type over the series' history (the "
                          "authors'), or window: from the input window alone (variant)"),
        "recycle_tokens": Param("per_series", choices=recycle.TOKENS, applies=for_models("recycle"),
                                help="ReCycle tokens: each series separately (the authors'), or flat: "
                                     "all channels of a cycle in one token (variant)"),
        "recycle_window_norm": Param(False, applies=for_models("recycle"),
                                     help="ReCycle variant: tokens scaled by the window's spread"),
        "recycle_zero_init": Param(False, applies=for_models("recycle"),
                                   help="ReCycle variant: output layer starts at zero (= RHP)"),
        "day_types": Param("auto", choices=("auto", "on", "off"),
                           help="RHP per day type (workday/Saturday/Sunday-holiday); auto: on when "
                                "the cycle is one day", applies=for_models(*PROFILE)),
        "holiday_country": Param("", help="ISO code for public holidays as day type 2 (holidays "
                                          "package), e.g. DE, CN; empty: Sundays only",
                                applies=for_models(*PROFILE)),
        "patch_len": Param(16, low=1, high=4096, help="PatchTST patch length", applies=for_models("patchtst")),
        "stride": Param(8, low=1, high=4096, help="PatchTST patch stride", applies=for_models("patchtst")),
        "head_dropout": Param(0.0, low=0.0, high=0.9, help="PatchTST head dropout",
                              applies=for_models("patchtst")),
        "revin": Param(True, help="PatchTST instance normalisation", applies=for_models("patchtst")),
        "factor": Param(3.0, low=0.1, high=100.0, help="Autoformer: top factor·ln(L) lags",
                        applies=for_models("autoformer")),
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
            # tuned on model=mlp, 3 epochs, Adam (issue 8): forward gradients and feedback methods
            method_defaults={"forward_gradient": {"lr": 1e-3}, "f3": {"lr": 3e-5},
                             "dfa": {"lr": 1e-4}, "drtp": {"lr": 1e-4}},
            description="ETTh-sized synthetic series (17,420 rows), 336 → 96; minutes on a CPU"),
        "full": Preset(
            params={"dataset": "ETTh1", "seq_len": 336, "label_len": 48, "pred_len": 96,
                    "batch_size": 32},
            budget={"epochs": 10}, target=0.45, timeout_s=6 * 3600,
            method_defaults={"backprop": {"lr": 0.005, "schedule": "halve_per_epoch"}},
            description="the published setup on a real CSV (DLinear protocol: 10 epochs, Adam)"),
    }
    metrics = {"mse": False, "mae": False, "mape": False, "mase": False}
    """mse/mae: all channels, scaled (the LTSF convention). mape (%): the target column, unscaled,
    |y| < MAPE_EPS left out. mase: per channel, MAE over the in-sample MAE of the seasonal-naive
    forecast (season = cycle_len) on the training split, averaged over channels (scale-free)."""
    primary_metric = "mse"
    capabilities = frozenset({"sample_index", "regression", "functional", "sample_losses"})

    @classmethod
    def capabilities_for(cls, hp) -> frozenset[str]:
        """``model=mlp`` is an nn.Sequential of blocks (for F³, DFA, DRTP)."""
        extra = {"sequential_blocks"} if hp.get("model") == "mlp" else set()
        return cls.capabilities | extra

    data_params = ("data_dir",)

    @classmethod
    def data_files(cls, hp, preset):
        if hp.get("dataset", "synthetic") == "synthetic" or not hp.get("data_dir"):
            return []
        return [Path(hp["data_dir"]).expanduser() / data.DATASETS[hp["dataset"]][0]]

    def setup(self) -> None:
        hp = self.hp
        mtime = 0.0
        if hp.dataset != "synthetic":
            mtime = data.locate(hp.dataset, hp.data_dir).stat().st_mtime
        self.splits, self.scaler, info = _splits(hp.dataset, hp.get("data_dir", ""), hp.get("n_rows", 0),
                                                 hp.get("data_seed", 0), hp.seq_len, hp.label_len,
                                                 hp.pred_len, hp.features, hp.target, mtime,
                                                 hp.get("holiday_country", ""))
        self.channels = self.splits["train"].values.shape[1]
        self.cycle_len = int(hp.cycle_len) or info["cycle"]
        one_day = round(info["rows_per_day"]) == self.cycle_len
        day_types = hp.get("day_types", "off")
        self.use_day_types = day_types == "on" or (day_types == "auto" and one_day)
        if hp.model in PROFILE and hp.rhp == "rolling":
            self.splits = recycle.with_profiles(self.splits, data.SPLITS, self.cycle_len,
                                                hp.rhp_cycles, self.use_day_types)
        train = self.splits["train"].values.numpy().astype(np.float64)
        m = min(self.cycle_len, len(train) - 1)
        naive = np.abs(train[m:] - train[:-m]).mean(axis=0)
        self.mase_scale = torch.from_numpy(np.where(naive > 0, naive, 1.0))

    def train_dataset(self) -> Dataset:
        return self.splits["train"]

    def build_model(self) -> nn.Module:
        hp = self.hp.derive(cycle_len=self.cycle_len, use_day_types=self.use_day_types)
        return MODELS[self.hp.model](hp, self.channels)

    def forward(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        inner = getattr(model, "module", model)
        if getattr(inner, "accepts_day_types", False) and "x_day" in batch:
            profiles = ({"x_rhp": batch["x_rhp"], "y_rhp": batch["y_rhp"]}
                        if getattr(inner, "accepts_profiles", False) and "x_rhp" in batch else {})
            return model(batch["x"], batch["x_mark"], batch["y_mark"], x_day=batch["x_day"],
                         y_day=batch["y_day"], **profiles)
        return model(batch["x"], batch["x_mark"], batch["y_mark"])

    def model_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        return batch["x"], batch["x_mark"], batch["y_mark"]

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return nn.functional.mse_loss(self.forward(model, batch), batch["y"])

    def sample_losses(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Per-sample MSE; every sample has pred_len × C terms, so their mean is ``loss``."""
        return (self.forward(model, batch) - batch["y"]).pow(2).flatten(1).mean(1)

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        loader = DataLoader(self.splits[split], batch_size=EVAL_BATCH, shuffle=False)
        se = ae = count = 0.0
        ae_channel = torch.zeros(self.channels, dtype=torch.float64)
        ape, ape_count = 0.0, 0
        t_mean, t_std = float(self.scaler.mean[-1]), float(self.scaler.std[-1])
        for batch in loader:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            err = self.forward(model, batch) - batch["y"]
            se += float(err.pow(2).sum())
            ae += float(err.abs().sum())
            count += err.numel()
            ae_channel += err.abs().sum(dim=(0, 1)).double().cpu()
            truth = batch["y"][..., -1].double() * t_std + t_mean     # target column, unscaled
            keep = truth.abs() >= MAPE_EPS
            ape += float((err[..., -1].double().abs() * t_std / truth.abs())[keep].sum())
            ape_count += int(keep.sum())
        per_channel = ae_channel / (count / self.channels)
        return {"mse": se / count, "mae": ae / count,
                "mape": 100.0 * ape / ape_count if ape_count else float("nan"),
                "mase": float((per_channel / self.mase_scale).mean())}

    def model_name(self) -> str:
        return self.hp.model

