"""Forecasters with no trainable parameters: the baselines every leaderboard needs.

They run through the harness like any model; the runner sees that nothing can be trained, skips
the method and records ``training_skipped`` (so their train time and energy are honestly ~0).
"""

from __future__ import annotations

import torch
from torch import nn


class RepeatLast(nn.Module):
    """Repeat the last observed value over the whole horizon (the "naive" forecast)."""

    def __init__(self, pred_len: int) -> None:
        super().__init__()
        self.pred_len = pred_len

    def forward(self, x: torch.Tensor, x_mark=None, y_mark=None, **_) -> torch.Tensor:
        return x[:, -1:].expand(-1, self.pred_len, -1).clone()


class SeasonalNaive(nn.Module):
    """Repeat the last full season: ``y[t] = x[t - season·k]`` for the smallest k that is observed."""

    def __init__(self, seq_len: int, pred_len: int, season: int) -> None:
        super().__init__()
        if season < 1 or season > seq_len:
            raise ValueError(f"seasonal_naive needs 1 <= cycle_len <= seq_len, got cycle_len={season}, "
                             f"seq_len={seq_len}")
        self.pred_len, self.season = pred_len, season
        index = seq_len - season + torch.arange(pred_len) % season
        self.register_buffer("index", index, persistent=False)

    def forward(self, x: torch.Tensor, x_mark=None, y_mark=None, **_) -> torch.Tensor:
        return x[:, self.index]
