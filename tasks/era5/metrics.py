"""Latitude-weighted RMSE and ACC, as FourCastNet and WeatherBench report them.

Weights: cos(latitude) normalised to mean 1 over the latitudes of the grid. Per sample and
channel: RMSE = sqrt(mean over grid of w·(f - o)²); ACC = Σ w·f'·o' / sqrt(Σ w·f'² · Σ w·o'²) with
anomalies f' = f - c, o' = o - c against a climatology c of the training years. Scores are averaged
over samples (FourCastNet's convention: the mean of per-sample RMSEs, not the root of a mean MSE).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

ACC_EPS = 1e-12


def lat_weights(lat_deg: np.ndarray) -> np.ndarray:
    w = np.cos(np.deg2rad(np.asarray(lat_deg, dtype=np.float64)))
    return w / w.mean()


def weighted_rmse(pred: torch.Tensor, obs: torch.Tensor, w_lat: torch.Tensor) -> torch.Tensor:
    """(..., lat, lon) → (...): per-field latitude-weighted RMSE."""
    return ((pred - obs) ** 2 * w_lat[:, None]).mean(dim=(-2, -1)).sqrt()


def weighted_acc(pred: torch.Tensor, obs: torch.Tensor, clim: torch.Tensor,
                 w_lat: torch.Tensor) -> torch.Tensor:
    """(..., lat, lon) → (...): per-field latitude-weighted anomaly correlation."""
    fa, oa = pred - clim, obs - clim
    w = w_lat[:, None]
    num = (w * fa * oa).sum(dim=(-2, -1))
    den = ((w * fa**2).sum(dim=(-2, -1)) * (w * oa**2).sum(dim=(-2, -1))).sqrt()
    return num / den.clamp_min(ACC_EPS)


class Scores:
    """Running sums of per-sample scores per (forecaster, lead, score) and channel."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, int, str], torch.Tensor] = defaultdict(lambda: 0.0)
        self.counts: dict[tuple[str, int, str], int] = defaultdict(int)

    def add(self, forecaster: str, lead: int, score: str, values: torch.Tensor) -> None:
        """values: (batch, channels) per-sample scores."""
        key = (forecaster, lead, score)
        self.sums[key] = self.sums[key] + values.double().sum(dim=0).cpu()
        self.counts[key] += values.shape[0]

    def mean(self, forecaster: str, lead: int, score: str) -> np.ndarray:
        key = (forecaster, lead, score)
        return (self.sums[key] / max(self.counts[key], 1)).numpy()

    def has(self, forecaster: str, lead: int, score: str) -> bool:
        return self.counts.get((forecaster, lead, score), 0) > 0
