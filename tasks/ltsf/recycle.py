"""ReCycle (Weyrauch et al., "ReCycle: Fast and Efficient Long Time Series Forecasting with
Residual Cyclic Transformers"): primary cycle compression, recent-historic profiles, residuals.

* **Recent historic profile (RHP)**: for every phase of the primary cycle (hour of the day for
  hourly data) and every day type (workday / Saturday / Sunday-holiday), the mean of the last
  ``rhp_cycles`` cycles of the input window whose value at that phase has that day type. When the
  window holds no cycle of a type, the mean of the last ``rhp_cycles`` cycles of any type is used.
  Cycles are counted back from the end of the input window, so windows need not start at midnight;
  for windows that do, this is exactly "the mean of the last n days of the same type".
* **The profile alone** (:class:`RHPForecast`, model ``rhp``) is a forecaster with no trainable
  parameters: the fallback ReCycle degrades to.
* **ReCycle** (:class:`ReCycle`, model ``recycle``): every cycle becomes one token (its residual
  against the profile, all channels flattened, plus day-type fractions and calendar features), so
  attention runs over ``seq_len / cycle_len`` tokens instead of ``seq_len``. An encoder-decoder
  Transformer maps the input tokens and the forecast profile tokens to the forecast residual in one
  shot (no causal mask). Token values are divided by each window's per-channel spread and the
  forecast profile is taken relative to the window's mean (the residual is scaled back), so the
  Transformer never sees an absolute level. The output layer starts at zero, so an untrained
  ReCycle forecasts the RHP.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from joulebench.tasks.ltsf.calendar import N_DAY_TYPES, day_types_from_marks


def rhp_table(x: torch.Tensor, days: torch.Tensor | None, cycle: int, n_cycles: int) -> torch.Tensor:
    """Recent historic profiles ``[B, N_DAY_TYPES, cycle, C]`` from the last whole cycles of ``x``.

    ``x``: ``[B, L, C]``; ``days``: ``[B, L]`` day types or None (then all types share one profile).
    """
    b, length, c = x.shape
    n_in = length // cycle
    if n_in < 1:
        raise ValueError(f"the input window ({length} rows) is shorter than one cycle ({cycle} rows)")
    xc = x[:, length - n_in * cycle:].reshape(b, n_in, cycle, c)
    any_type = xc[:, -n_cycles:].mean(dim=1)                               # [B, cycle, C]
    if days is None:
        return any_type.unsqueeze(1).expand(-1, N_DAY_TYPES, -1, -1)
    dc = days[:, length - n_in * cycle:].reshape(b, n_in, cycle)
    profiles = []
    for day_type in range(N_DAY_TYPES):
        match = (dc == day_type).to(x.dtype)                               # [B, n_in, cycle]
        rank = match.flip(1).cumsum(1).flip(1)                             # 1 = most recent match
        chosen = match * (rank <= n_cycles).to(x.dtype)
        count = chosen.sum(1)                                              # [B, cycle]
        mean = (chosen.unsqueeze(-1) * xc).sum(1) / count.clamp(min=1).unsqueeze(-1)
        profiles.append(torch.where(count.unsqueeze(-1) > 0, mean, any_type))
    return torch.stack(profiles, dim=1)


def lookup(table: torch.Tensor, days: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Profile values ``[B, T, C]`` for day types ``days [B, T]`` at cycle phases ``phase [T]``."""
    b, n_types, cycle, c = table.shape
    index = days * cycle + phase.unsqueeze(0)                              # [B, T]
    flat = table.reshape(b, n_types * cycle, c)
    return torch.gather(flat, 1, index.unsqueeze(-1).expand(-1, -1, c))


class _Profiles(nn.Module):
    """Shared by both forecasters: historic and forecast profiles of a batch."""

    accepts_day_types = True  # the task passes x_day/y_day (holiday-aware day types)

    def __init__(self, seq_len: int, pred_len: int, cycle_len: int, rhp_cycles: int,
                 use_day_types: bool) -> None:
        super().__init__()
        if cycle_len < 1 or cycle_len > seq_len:
            raise ValueError(f"ReCycle needs 1 <= cycle_len <= seq_len, got cycle_len={cycle_len}, "
                             f"seq_len={seq_len}")
        self.seq_len, self.pred_len, self.cycle = seq_len, pred_len, cycle_len
        self.n_in = seq_len // cycle_len
        self.n_out = math.ceil(pred_len / cycle_len)
        self.rhp_cycles, self.use_day_types = rhp_cycles, use_day_types
        self.register_buffer("phase_out", torch.arange(pred_len) % cycle_len, persistent=False)
        self.register_buffer("phase_in", torch.arange(self.n_in * cycle_len) % cycle_len,
                             persistent=False)

    def day_types(self, x_mark, y_mark, x_day, y_day):
        if not self.use_day_types:
            return None, None
        if x_day is None:
            x_day = day_types_from_marks(x_mark)
        if y_day is None:
            y_day = day_types_from_marks(y_mark[:, -self.pred_len:])
        return x_day, y_day

    def profiles(self, x, x_mark, y_mark, x_day, y_day):
        x_day, y_day = self.day_types(x_mark, y_mark, x_day, y_day)
        table = rhp_table(x, x_day, self.cycle, self.rhp_cycles)
        b = x.shape[0]
        zeros_out = torch.zeros(b, self.pred_len, dtype=torch.long, device=x.device)
        out = lookup(table, y_day if y_day is not None else zeros_out, self.phase_out)
        n = self.n_in * self.cycle
        hist_days = x_day[:, -n:] if x_day is not None else zeros_out.new_zeros(b, n)
        hist = lookup(table, hist_days, self.phase_in)
        return hist, out, x_day, y_day


class RHPForecast(_Profiles):
    """The recent-historic-profile forecast alone: no trainable parameters."""

    def forward(self, x, x_mark=None, y_mark=None, x_day=None, y_day=None) -> torch.Tensor:
        return self.profiles(x, x_mark, y_mark, x_day, y_day)[1]


class ReCycle(_Profiles):
    """Residual cyclic Transformer over one token per cycle (see the module docstring)."""

    def __init__(self, seq_len: int, pred_len: int, channels: int, cycle_len: int = 24,
                 rhp_cycles: int = 3, use_day_types: bool = True, d_model: int = 64,
                 n_heads: int = 4, e_layers: int = 2, d_layers: int = 1, d_ff: int = 128,
                 dropout: float = 0.05, n_marks: int = 4) -> None:
        super().__init__(seq_len, pred_len, cycle_len, rhp_cycles, use_day_types)
        self.channels = channels
        width = cycle_len * channels
        meta = N_DAY_TYPES + n_marks
        self.enc_in = nn.Linear(width + meta, d_model)
        self.dec_in = nn.Linear(width + meta, d_model)
        self.enc_pos = nn.Parameter(torch.zeros(1, self.n_in, d_model))
        self.dec_pos = nn.Parameter(torch.zeros(1, self.n_out, d_model))
        nn.init.normal_(self.enc_pos, std=0.02)
        nn.init.normal_(self.dec_pos, std=0.02)
        self.transformer = nn.Transformer(d_model, n_heads, e_layers, d_layers, d_ff, dropout,
                                          activation="gelu", batch_first=True)
        self.out = nn.Linear(d_model, width)
        nn.init.zeros_(self.out.weight)  # start as the profile forecast: residual 0
        nn.init.zeros_(self.out.bias)

    def _tokens(self, values: torch.Tensor, days: torch.Tensor | None, marks: torch.Tensor,
                n_tokens: int) -> torch.Tensor:
        """``values [B, n·cycle, C]`` → ``[B, n, cycle·C + day-type fractions + marks]``."""
        b = values.shape[0]
        flat = values.reshape(b, n_tokens, self.cycle * self.channels)
        if days is None:
            frac = flat.new_zeros(b, n_tokens, N_DAY_TYPES)
            frac[..., 0] = 1.0
        else:
            onehot = nn.functional.one_hot(days, N_DAY_TYPES).to(values.dtype)
            frac = onehot.reshape(b, n_tokens, self.cycle, N_DAY_TYPES).mean(2)
        first_marks = marks.reshape(b, n_tokens, self.cycle, -1)[:, :, 0]
        return torch.cat([flat, frac, first_marks], dim=-1)

    def forward(self, x, x_mark, y_mark, x_day=None, y_day=None) -> torch.Tensor:
        hist, out, x_day, y_day = self.profiles(x, x_mark, y_mark, x_day, y_day)
        b, n = x.shape[0], self.n_in * self.cycle
        pad = self.n_out * self.cycle - self.pred_len
        future_marks = y_mark[:, -self.pred_len:]
        if pad:  # the last forecast cycle is partial: pad it, and drop the padding at the end
            out_p = torch.cat([out, out[:, -1:].expand(-1, pad, -1)], dim=1)
            marks_p = torch.cat([future_marks, future_marks[:, -1:].expand(-1, pad, -1)], dim=1)
            days_p = None if y_day is None else torch.cat([y_day, y_day[:, -1:].expand(-1, pad)], 1)
        else:
            out_p, marks_p, days_p = out, future_marks, y_day
        # instance-normalised tokens: no absolute level reaches the Transformer, so a level it
        # never saw in training (ETTh2's test months) cannot throw its residual off
        level = x.mean(1, keepdim=True).detach()
        spread = (x.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt().detach()
        enc = self._tokens((x[:, -n:] - hist) / spread, None if x_day is None else x_day[:, -n:],
                           x_mark[:, -n:], self.n_in)
        dec = self._tokens((out_p - level) / spread, days_p, marks_p, self.n_out)
        h = self.transformer(self.enc_in(enc) + self.enc_pos, self.dec_in(dec) + self.dec_pos)
        residual = self.out(h).reshape(b, self.n_out * self.cycle, self.channels)
        return out + residual[:, : self.pred_len] * spread
