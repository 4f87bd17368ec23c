"""The ERA5 task: 6-hourly global forecasting with a FourCastNet-style AFNO.

Data: a WeatherBench2-layout ERA5 store (``data_dir``; ``data_cards/era5.md``) or, when
``data_dir`` is empty, a generated stand-in in the same layout (``generate.py``), read through the
same code. Channels are z-scored with statistics of the training years only. The model predicts
the state 6 h ahead from the current one; ``rollout_steps`` > 1 trains on k autoregressive steps
(FourCastNet's fine-tuning). Scores: latitude-weighted RMSE and ACC per channel, for the model and
for persistence and climatology baselines, at one step and at ``eval_lead_hours``.

Feeding the full preset: at 0.25° one step of the 20 channels is 83 MB (721 × 1440 × 20 float32),
a sample (state and target) 166 MB. The preset trains FourCastNet's global batch of 64 as one
sample per rank on 64 ranks (``batch_size`` is per rank; ``lr_reference_batch=64`` scales the
rate to the global batch on fewer ranks): a step's host batch is 166 MB, and with ``workers``
loader processes prefetching two batches each, pinned host memory holds about
``workers`` × 2 × 166 MB (8 workers: 2.7 GB) beside each loader process's two cached stored
chunks (``data.ChunkReader``). On the GPU the AFNO's activations at 16,200 tokens × 768 take
some GB per sample, which is why FourCastNet ran one sample per A100.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from joulebench.harness.params import Param
from joulebench.harness.registry import register_task
from joulebench.harness.task import WORKERS, Batch, Preset, Task
from joulebench.tasks.era5 import stats as era5_stats
from joulebench.tasks.era5.afno import AFNONet
from joulebench.tasks.era5.channels import KEY_CHANNELS, parse_channels
from joulebench.tasks.era5.data import Source, parse_years
from joulebench.tasks.era5.generate import GenConfig, ensure_store, era5_cache
from joulebench.tasks.era5.metrics import Scores, lat_weights, weighted_acc, weighted_rmse
from joulebench.tasks.era5.windows import ChunkShuffle, Frames, Windows

SPLITS = ("train", "val", "test")
FORECASTERS = ("model", "persistence", "climatology")


@lru_cache(maxsize=2)
def _prepared(path: str, mtime: float, channels: str, step_hours: int, years: tuple, kind: str,
              stats_steps: int, preload_mb: float, cache: str):
    """Source, statistics and per-split frames, once per worker process."""
    source = Source(path, parse_channels(channels), step_hours)
    spans = {split: source.split_steps(y) for split, y in zip(SPLITS, years, strict=True)}
    train_mb = (spans["train"][1] - spans["train"][0]) * len(source.channels) * np.prod(source.shape) * 4 / 2**20
    if stats_steps or train_mb > preload_mb:  # real data: cache the expensive statistics on disk
        stats = era5_stats.cached(source, spans["train"], kind, stats_steps, Path(cache))
    else:
        stats = era5_stats.compute(source, spans["train"], kind)
    frames = {split: Frames(source, spans[split], stats, preload_mb) for split in SPLITS}
    return source, stats, frames


def _metric_names() -> dict[str, bool]:
    names = {"rmse_norm": False, "acc_mean": True, "skill_vs_persistence": True}
    for f in ("persistence", "climatology"):
        names[f"rmse_norm_{f}"] = False
    names["acc_mean_persistence"] = True
    for suffix in ("", "_24h"):
        for ch in KEY_CHANNELS:
            names[f"rmse_{ch}{suffix}"] = False
            names[f"acc_{ch}{suffix}"] = True
            names[f"rmse_{ch}{suffix}_persistence"] = False
            names[f"acc_{ch}{suffix}_persistence"] = True
            names[f"rmse_{ch}{suffix}_climatology"] = False
    for name in ("rmse_norm", "acc_mean"):
        names[f"{name}_24h"] = name.startswith("acc")
        names[f"{name}_24h_persistence"] = name.startswith("acc")
    names["rmse_norm_24h_climatology"] = False
    return names


@register_task
class ERA5(Task):
    name = "era5"
    description = "ERA5 6-hourly global forecasting, FourCastNet-style AFNO (lat-weighted RMSE/ACC)"
    params = {
        "data_dir": Param("", help="WeatherBench2-layout ERA5 zarr store or netCDF file; empty: generated"),
        "channels": Param("full", help="'full' (FourCastNet's 20) or names such as z500,t850,t2m,u10"),
        "train_years": Param("1979-2015"),
        "val_years": Param("2016-2017"),
        "test_years": Param("2018"),
        "step_hours": Param(6, low=1, high=24, help="forecast step; hourly stores are subsampled"),
        "climatology": Param("month_hour", choices=("month_hour", "mean"),
                             help="ACC reference and baseline: per month and hour, or the time mean"),
        "stats_steps": Param(0, low=0, high=10_000_000,
                             help="training steps for statistics (evenly spaced); 0: all"),
        "preload_mb": Param(2048.0, low=0.0, high=1e7, help="read a split into memory up to this size"),
        "cache_dir": Param("", help="generated stores and statistics; empty: $JOULEBENCH_CACHE or ~/.cache/joulebench"),
        "gen_lat": Param(32, low=4, high=721, help="generated grid: latitudes"),
        "gen_lon": Param(64, low=8, high=1440, help="generated grid: longitudes"),
        "gen_days": Param(8, low=1, high=28, help="generated: days stored per month"),
        "data_seed": Param(0, help="seed of the generated weather (fixed across run seeds)"),
        "patch_size": Param(8, low=1, high=64),
        "embed_dim": Param(768, low=8, high=4096),
        "depth": Param(12, low=1, high=48),
        "num_blocks": Param(8, low=1, high=64, help="AFNO block-diagonal blocks (divides embed_dim)"),
        "mlp_ratio": Param(4.0, low=0.5, high=16.0),
        "sparsity": Param(0.01, low=0.0, high=1.0, help="AFNO soft-shrinkage threshold"),
        "keep_fraction": Param(1.0, low=0.05, high=1.0, help="AFNO hard-thresholding fraction of modes"),
        "residual": Param(False, help="predict the change x(t+6h) - x(t) (FourCastNet: false)"),
        "rollout_steps": Param(1, low=1, high=16, help="training loss over k autoregressive steps"),
        "eval_lead_hours": Param(24, low=0, high=24 * 15, help="second lead time scored; 0: none"),
        "eval_samples": Param(0, low=0, high=10_000_000, help="initial times scored per split; 0: all"),
        "lat_weighted_loss": Param(False, help="weight the MSE loss by cos(latitude)"),
        "batch_size": Param(64, low=1, high=65536, help="per rank"),
        "workers": WORKERS,
    }
    presets = {
        "tiny": Preset(
            params={"gen_lat": 16, "gen_lon": 32, "gen_days": 2, "train_years": "2000",
                    "val_years": "2001", "test_years": "2002", "patch_size": 4, "embed_dim": 32,
                    "depth": 2, "num_blocks": 4, "mlp_ratio": 2.0, "residual": True, "batch_size": 16},
            budget={"steps": 30}, eval_every=15, target=0.25, timeout_s=120,
            method_defaults={"backprop": {"lr": 0.002}},
            description="generated 16×32 grid, 20 channels, 3 years × 24 days; seconds on one core"),
        "small": Preset(
            params={"gen_lat": 32, "gen_lon": 64, "gen_days": 8, "train_years": "2000-2001",
                    "val_years": "2002", "test_years": "2003", "patch_size": 4, "embed_dim": 64,
                    "depth": 4, "num_blocks": 8, "mlp_ratio": 2.0, "residual": True, "batch_size": 16},
            budget={"epochs": 4}, target=0.15, timeout_s=1800,
            method_defaults={"backprop": {"lr": 0.002}},
            description="generated 32×64 grid (WB2 5.625°), 20 channels, 4 years × 96 days; minutes"),
        "full": Preset(
            params={"train_years": "1979-2015", "val_years": "2016-2017", "test_years": "2018",
                    "climatology": "mean", "stats_steps": 1460, "patch_size": 8, "embed_dim": 768,
                    "depth": 12, "num_blocks": 8, "batch_size": 1},
            budget={"epochs": 80}, target=None, timeout_s=7 * 24 * 3600,
            method_defaults={"backprop": {"lr": 5e-4, "schedule": "cosine", "lr_reference_batch": 64}},
            description="FourCastNet on ERA5 0.25° (721×1440, 20 channels) from data_dir; GPUs"),
    }
    metrics = _metric_names()
    """rmse_norm: latitude-weighted RMSE in units of each channel's training std, mean over channels
    (primary, 6 h). rmse_<ch> in physical units, acc_<ch> against the training climatology.
    Suffixes: _24h (eval_lead_hours), _persistence / _climatology (baselines).
    skill_vs_persistence = 1 - rmse_norm / rmse_norm_persistence."""
    primary_metric = "rmse_norm"
    capabilities = frozenset({"sample_index", "regression", "functional"})

    data_params = ("data_dir",)

    @classmethod
    def data_files(cls, hp, preset):
        return [Path(hp["data_dir"]).expanduser()] if hp.get("data_dir") else []

    # -- data ---------------------------------------------------------------------------------
    def store_path(self) -> Path:
        hp = self.hp
        if hp.data_dir:
            return Path(hp.data_dir).expanduser()
        if self.preset == "full":
            raise FileNotFoundError("the full preset reads real ERA5: pass -T data_dir=/path/to/"
                                    "1959-2023_01_10-wb13-6h-1440x721_with_derived_variables.zarr "
                                    "(WeatherBench2 layout; see data_cards/era5.md)")
        years = [parse_years(hp[f"{s}_years"]) for s in SPLITS]
        cfg = GenConfig(n_lat=hp.gen_lat, n_lon=hp.gen_lon, first_year=min(y[0] for y in years),
                        last_year=max(y[1] for y in years), days_per_month=hp.gen_days,
                        step_hours=hp.step_hours, seed=hp.data_seed)
        return ensure_store(cfg, hp.cache_dir)

    def setup(self) -> None:
        hp = self.hp
        path = self.store_path()
        mtime = path.stat().st_mtime if path.exists() else 0.0
        years = tuple(parse_years(hp[f"{s}_years"]) for s in SPLITS)
        self.source, self.stats, self.frames = _prepared(
            str(path), mtime, hp.channels, hp.step_hours, years, hp.climatology, hp.stats_steps,
            hp.preload_mb, str(era5_cache(hp.cache_dir)))
        self.names = [c.name for c in self.source.channels]
        self.lead = max(1, hp.eval_lead_hours // hp.step_hours) if hp.eval_lead_hours else 1
        self.w_lat = torch.from_numpy(lat_weights(self.source.lat)).float()
        self.clim = torch.from_numpy(self.stats.normalised_clim())
        self.train_windows = Windows(self.frames["train"], hp.rollout_steps)
        if len(self.train_windows) == 0:
            raise ValueError(f"no training sample: the training years hold no {hp.rollout_steps + 1} "
                             f"consecutive {hp.step_hours}-hourly steps")

    def train_dataset(self) -> Dataset:
        return self.train_windows

    def data_in_memory(self) -> bool:
        return all(f.memory is not None for f in self.frames.values())

    def train_loader(self, sampler: Sampler | None = None,
                     generator: torch.Generator | None = None) -> DataLoader:
        """Read from disk with one rank, samples come chunk by chunk (``ChunkShuffle``); a
        distributed sampler, or data in memory, keeps the plain shuffled order."""
        if sampler is not None or self.frames["train"].memory is not None or self.source.time_chunk == 1:
            return super().train_loader(sampler, generator)
        data = self.train_windows
        return DataLoader(data, batch_size=self.batch_size, sampler=ChunkShuffle(data, generator),
                          drop_last=len(data) > self.batch_size, **self.loader_options(train=True))

    # -- model and loss -----------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        hp = self.hp
        return AFNONet(len(self.names), self.source.shape, patch=hp.patch_size,
                       embed_dim=hp.embed_dim, depth=hp.depth, num_blocks=hp.num_blocks,
                       mlp_ratio=hp.mlp_ratio, sparsity=hp.sparsity,
                       keep_fraction=hp.keep_fraction, residual=hp.residual)

    def model_name(self) -> str:
        return f"afno-p{self.hp.patch_size}-d{self.hp.embed_dim}x{self.hp.depth}"

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        state, target = batch["x"], batch["y"]
        w = self.w_lat.to(state.device)[:, None] if self.hp.lat_weighted_loss else 1.0
        total = 0.0
        for k in range(self.hp.rollout_steps):
            state = model(state)
            total = total + ((state - target[:, k]) ** 2 * w).mean()
        return total / self.hp.rollout_steps

    # -- evaluation ---------------------------------------------------------------------------
    def _eval_loader(self, split: str) -> tuple[Windows, DataLoader]:
        windows = Windows(self.frames[split], self.lead)
        data: Dataset = windows
        n = int(self.hp.eval_samples)
        if 0 < n < len(windows):
            data = Subset(windows, np.linspace(0, len(windows) - 1, n).round().astype(int).tolist())
        return windows, self.eval_loader(data)

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        windows, loader = self._eval_loader(split)
        w, clim = self.w_lat.to(self.device), self.clim.to(self.device)
        leads = sorted({1, self.lead})
        scores = Scores()
        for batch in loader:
            x, y = batch["x"].to(self.device), batch["y"].to(self.device)
            index = batch["index"].numpy()
            state = x
            for lead in range(1, self.lead + 1):
                state = model(state)
                if lead not in leads:
                    continue
                obs = y[:, lead - 1]
                c = clim[torch.from_numpy(self.stats.bins(windows.target_times(index, lead))).to(self.device)]
                for name, pred in (("model", state), ("persistence", x), ("climatology", c)):
                    scores.add(name, lead, "rmse", weighted_rmse(pred, obs, w))
                    if name != "climatology":
                        scores.add(name, lead, "acc", weighted_acc(pred, obs, c, w))
        if not scores.has("model", 1, "rmse"):
            raise ValueError(f"no {split} sample: the {split} years hold no {self.lead + 1} consecutive steps")
        return self._report(scores, leads)

    def _report(self, scores: Scores, leads: list[int]) -> dict[str, float]:
        out: dict[str, float] = {}
        std = self.stats.std
        for lead in leads:
            suffix = "" if lead == 1 else f"_{lead * self.hp.step_hours}h"
            for f in FORECASTERS:
                tail = "" if f == "model" else f"_{f}"
                rmse = scores.mean(f, lead, "rmse")
                out[f"rmse_norm{suffix}{tail}"] = float(rmse.mean())
                for ch in KEY_CHANNELS:
                    if ch in self.names:
                        c = self.names.index(ch)
                        out[f"rmse_{ch}{suffix}{tail}"] = float(rmse[c] * std[c])
                if f != "climatology":
                    acc = scores.mean(f, lead, "acc")
                    out[f"acc_mean{suffix}{tail}"] = float(acc.mean())
                    for ch in KEY_CHANNELS:
                        if ch in self.names:
                            out[f"acc_{ch}{suffix}{tail}"] = float(acc[self.names.index(ch)])
        out["skill_vs_persistence"] = 1.0 - out["rmse_norm"] / max(out["rmse_norm_persistence"], 1e-12)
        return out
