"""Probabilistic metrics on quantiles or samples: CRPS, pinball loss, coverage, MAE of the median."""

from __future__ import annotations

import math

import torch

QUANTILES = tuple(round(0.1 * i, 1) for i in range(1, 10))


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


def summary(q: torch.Tensor, y: torch.Tensor, crps: torch.Tensor, levels=QUANTILES) -> dict[str, float]:
    lo, hi, med = q[levels.index(0.1)], q[levels.index(0.9)], q[levels.index(0.5)]
    cov = ((y >= lo) & (y <= hi)).float().mean()
    return {"crps": float(crps), "pinball": float(pinball(q, y, levels)),
            "coverage80": float(cov), "mae_median": float((med - y).abs().mean())}
