"""Probabilistic metrics on quantiles or samples: CRPS, pinball loss, coverage, MAE of the median."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

QUANTILES = tuple(round(0.1 * i, 1) for i in range(1, 10))
CRPS_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""The 19 levels 0.05…0.95 on which every forecaster's quantile-score CRPS (``crps_quantiles``)
is computed: quantile regression predicts exactly these, sample forecasters are read at them."""


def crps_samples(samples: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean CRPS from an ensemble (S, N, H) with the sorted-sample (unbiased energy) form."""
    s = torch.sort(samples, 0).values
    m = s.shape[0]
    term1 = (s - y[None]).abs().mean(0)
    w = (2 * torch.arange(1, m + 1, device=s.device, dtype=s.dtype) - m - 1)[:, None, None]
    term2 = (w * s).sum(0) / (m * (m - 1))              # = 0.5 E|X - X'| (without self pairs)
    return (term1 - term2).mean()


def crps_gaussian(mu: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = (y - mu) / sigma
    pdf = torch.exp(-0.5 * z ** 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return (sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))).mean()


def pinball(q: torch.Tensor, y: torch.Tensor, levels=QUANTILES) -> torch.Tensor:
    """Mean pinball loss; q has the quantile levels on dim 0."""
    lv = torch.tensor(levels, dtype=q.dtype, device=q.device).view(-1, *([1] * y.dim()))
    d = y[None] - q
    return torch.maximum(lv * d, (lv - 1) * d).mean()


def crps_quantiles(q: torch.Tensor, y: torch.Tensor, levels=CRPS_LEVELS) -> torch.Tensor:
    """CRPS from quantiles (levels on dim 0): twice the mean pinball loss over the levels, the
    quantile decomposition CRPS = 2∫ρ_τ dτ on an even grid (the tails beyond the outer levels are
    left out). One estimator for quantile and sample forecasters alike, so their ratio is fair."""
    return 2 * pinball(q, y, levels)


def conformal_quantiles(point: torch.Tensor, residual_val: torch.Tensor, levels=CRPS_LEVELS) -> torch.Tensor:
    """Split-conformal quantiles (L, N, H): the point forecast plus the empirical quantiles of the
    validation residuals (N_val, H), per horizon hour. The (n+1)/n finite-sample correction of
    split conformal prediction is below 0.1 % at these validation sizes and left out."""
    lv = torch.tensor(levels, dtype=residual_val.dtype, device=residual_val.device)
    return point[None] + torch.quantile(residual_val, lv, dim=0)[:, None]


def summary(q: torch.Tensor, y: torch.Tensor, crps: torch.Tensor, levels=QUANTILES) -> dict[str, float]:
    lo, hi, med = q[levels.index(0.1)], q[levels.index(0.9)], q[levels.index(0.5)]
    cov = ((y >= lo) & (y <= hi)).float().mean()
    return {"crps": float(crps), "pinball": float(pinball(q, y, levels)),
            "coverage80": float(cov), "mae_median": float((med - y).abs().mean())}


def select_on_validation(sample: Callable[[float], torch.Tensor], y_val: torch.Tensor,
                         low: float = 0.2, high: float = 3.0, evals: int = 9) -> float:
    """The width (a Gaussian's σ factor or a cINN's latent spread) with the lowest validation CRPS:
    one rule for every forecaster, so none is compared at a width chosen by hand or on test data.

    ``sample(width)`` returns validation samples (S, N, H). Golden-section search on log width in
    [low, high] (CRPS is unimodal in the width of a family), ``evals`` CRPS evaluations in all:
    the search runs at every validation point of a run, so it must be cheap."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = math.log(low), math.log(high)
    cache: dict[float, float] = {}

    def crps(u: float) -> float:
        if u not in cache:
            cache[u] = float(crps_samples(sample(math.exp(u)), y_val))
        return cache[u]

    c, d = b - ratio * (b - a), a + ratio * (b - a)
    while len(cache) < evals - 1:
        if crps(c) <= crps(d):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    crps((a + b) / 2)
    return math.exp(min(cache, key=cache.get))


def sample_summary(samples: torch.Tensor, y: torch.Tensor, levels=QUANTILES) -> dict[str, float]:
    """CRPS, pinball, coverage and median error of an ensemble (S, N, H), quantiles from samples."""
    q = torch.quantile(samples, torch.tensor(levels, dtype=samples.dtype, device=samples.device), dim=0)
    return summary(q, y, crps_samples(samples, y), levels)
