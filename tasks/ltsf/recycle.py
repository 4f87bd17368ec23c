"""ReCycle (Weyrauch et al., "ReCycle: Fast and Efficient Long Time Series Forecasting with
Residual Cyclic Transformers"): primary cycle compression, recent-historic profiles, residuals.

The authors' setup (github.com/Helmholtz-AI-Energy/ReCycle: ``data/rhp_datasets.py``,
``data/dataset.py``, ``models/torch_modules/{model,oneshot_transformer}.py``), the default here:

* **Recent historic profile (RHP), rolling** (``rhp=rolling``): walking through the series' history
  day by day, each day type (workday / Saturday / Sunday-holiday) keeps its last ``rhp_cycles``
  days; after each day the profile of its type is their mean (the day itself included), and the
  table of all three profiles is stored per day. A historic day's residual is taken against the
  table of that day (its own type); the forecast is the table of the *last* historic day, looked
  up by the forecast days' types. Each series (channel) has its own profiles. Here the profiles
  roll over the whole scaled series (train, validation and test in order: only the past is used),
  cycles are counted from the series' first row (ETT files and the synthetic series start at
  midnight), and a window that ends inside a cycle uses the table of the last complete cycle
  before its end (no row after the window's end enters its profile). Before a day type has been
  seen, its profile is the mean of the last ``rhp_cycles`` cycles of any type (the authors start
  from zeros but skip the run-up days).
* **Tokens per series** (``recycle_tokens=per_series``): every series separately, one token per
  cycle: the cycle's residual values plus the day's metadata. The authors' metadata is weekday
  one-hot and holiday flags; here it is the day-type one-hot plus the first row's calendar marks.
* **Encoder-decoder in one shot**: encoder tokens = historic residuals, decoder tokens = forecast
  profile; the output (dropout + linear, default init) is the forecast residual, added to the
  profile. Values are the dataset's global scaling (no per-window normalisation).

Named variants (the project's earlier formulation): ``rhp=window`` (profiles from the input window
alone: the mean of the window's last ``rhp_cycles`` cycles of each type, one table for every
historic cycle), ``recycle_tokens=flat`` (all channels of a cycle in one token),
``recycle_window_norm`` (tokens divided by the window's per-channel spread, forecast profile taken
relative to the window mean) and ``recycle_zero_init`` (output layer starts at zero, so an
untrained ReCycle forecasts the RHP).

* **The profile alone** (:class:`RHPForecast`, model ``rhp``) is a forecaster with no trainable
  parameters: the fallback ReCycle degrades to.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch
from torch import nn

from joulebench.tasks.ltsf.calendar import N_DAY_TYPES, day_types_from_marks

PROFILES = ("rolling", "window")
TOKENS = ("per_series", "flat")


# -- the rolling profile over the series' history (the authors' RHP) ----------------------------

def rolling_profiles(values: np.ndarray, cycle_types: np.ndarray, cycle: int, n_ref: int) -> np.ndarray:
    """Tables ``[n_cycles, N_DAY_TYPES, cycle, C]``: after cycle j, per day type, the mean of the
    last ``n_ref`` cycles of that type up to and including j (any type while none was seen).

    ``values``: ``[rows, C]`` (a trailing partial cycle is ignored); ``cycle_types``: the day type
    of each whole cycle.
    """
    n_cycles = len(values) // cycle
    if n_cycles < 1:
        raise ValueError(f"the series ({len(values)} rows) is shorter than one cycle ({cycle} rows)")
    cycles = values[: n_cycles * cycle].reshape(n_cycles, cycle, -1)
    tables = np.empty((n_cycles, N_DAY_TYPES, cycle, cycles.shape[-1]), dtype=np.float32)
    recent = [deque(maxlen=n_ref) for _ in range(N_DAY_TYPES)]
    any_type: deque = deque(maxlen=n_ref)
    for j in range(n_cycles):
        recent[int(cycle_types[j])].append(cycles[j])
        any_type.append(cycles[j])
        fallback = np.mean(any_type, axis=0)
        for t in range(N_DAY_TYPES):
            tables[j, t] = np.mean(recent[t], axis=0) if recent[t] else fallback
    return tables


class SeriesProfiles:
    """Rolling profiles of one whole series and their lookup for a window starting at any row."""

    def __init__(self, values: np.ndarray, days: np.ndarray | None, cycle: int, n_ref: int) -> None:
        rows = len(values)
        self.cycle = cycle
        self.days = torch.zeros(rows, dtype=torch.long) if days is None else torch.as_tensor(days).long()
        cycle_types = self.days[::cycle][: rows // cycle].numpy()
        self.tables = torch.from_numpy(rolling_profiles(np.asarray(values, dtype=np.float64),
                                                        cycle_types, cycle, n_ref))

    def window(self, start: int, seq_len: int, pred_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(historic ``[seq_len, C]``, forecast ``[pred_len, C]``) profiles of the window whose
        input is rows ``[start, start + seq_len)``."""
        end = start + seq_len
        last = min(max(end // self.cycle - 1, 0), len(self.tables) - 1)  # last complete cycle
        hist_rows = torch.arange(start, end)
        cycles = (hist_rows // self.cycle).clamp(max=last)
        hist = self.tables[cycles, self.days[hist_rows], hist_rows % self.cycle]
        future = torch.arange(end, end + pred_len)
        fut = self.tables[last, self.days[future], future % self.cycle]
        return hist, fut


class ProfileWindows:
    """A window data set whose items also carry ``x_rhp``/``y_rhp``: the rolling profiles of the
    input and forecast rows. ``offset``: the split's first row within the whole series."""

    def __init__(self, windows, profiles: SeriesProfiles, offset: int) -> None:
        self.windows, self.profiles, self.offset = windows, profiles, offset

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        item = self.windows[i]
        item["x_rhp"], item["y_rhp"] = self.profiles.window(self.offset + i, self.windows.seq_len,
                                                            self.windows.pred_len)
        return item

    def __getattr__(self, name: str):
        if name in ("windows", "profiles", "offset") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.windows, name)


def with_profiles(splits: dict, order: tuple[str, ...], cycle: int, n_ref: int,
                  use_day_types: bool) -> dict:
    """Wrap every split so its items carry rolling profiles computed over the whole series.

    The splits overlap by ``seq_len`` rows (validation and test start that early), so the whole
    series is the first split followed by each next split minus its first ``seq_len`` rows.
    """
    seq_len = splits[order[0]].seq_len
    values, days, offsets, at = [], [], {}, 0
    for k, name in enumerate(order):
        split = splits[name]
        skip = 0 if k == 0 else seq_len
        offsets[name] = at - skip
        values.append(split.values.numpy()[skip:])
        days.append(split.days.numpy()[skip:])
        at += len(split.values) - skip
    profiles = SeriesProfiles(np.concatenate(values), np.concatenate(days) if use_day_types else None,
                              cycle, n_ref)
    return {name: ProfileWindows(splits[name], profiles, offsets[name]) for name in order}


# -- the profile from the input window alone (variant rhp=window) -------------------------------

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
    """Shared by both forecasters: historic and forecast profiles of a batch, either given
    (``x_rhp``/``y_rhp``: the rolling profiles the task's data sets carry) or from the window."""

    accepts_day_types = True  # the task passes x_day/y_day (holiday-aware day types)
    accepts_profiles = True   # ... and x_rhp/y_rhp when the profile is rolling

    def __init__(self, seq_len: int, pred_len: int, cycle_len: int, rhp_cycles: int,
                 use_day_types: bool, profile: str = "rolling") -> None:
        super().__init__()
        if cycle_len < 1 or cycle_len > seq_len:
            raise ValueError(f"ReCycle needs 1 <= cycle_len <= seq_len, got cycle_len={cycle_len}, "
                             f"seq_len={seq_len}")
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
        self.seq_len, self.pred_len, self.cycle = seq_len, pred_len, cycle_len
        self.n_in = seq_len // cycle_len
        self.n_out = math.ceil(pred_len / cycle_len)
        self.rhp_cycles, self.use_day_types, self.profile = rhp_cycles, use_day_types, profile
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

    def profiles(self, x, x_mark, y_mark, x_day, y_day, x_rhp=None, y_rhp=None):
        """(historic profile of the last ``n_in`` whole cycles, forecast profile, day types)."""
        x_day, y_day = self.day_types(x_mark, y_mark, x_day, y_day)
        n = self.n_in * self.cycle
        if self.profile == "rolling":
            if x_rhp is None or y_rhp is None:
                raise ValueError("rhp=rolling needs the rolling profiles (x_rhp, y_rhp) of the "
                                 "task's data sets; rhp=window computes them from the input")
            return x_rhp[:, -n:], y_rhp, x_day, y_day
        table = rhp_table(x, x_day, self.cycle, self.rhp_cycles)
        b = x.shape[0]
        zeros_out = torch.zeros(b, self.pred_len, dtype=torch.long, device=x.device)
        out = lookup(table, y_day if y_day is not None else zeros_out, self.phase_out)
        hist_days = x_day[:, -n:] if x_day is not None else zeros_out.new_zeros(b, n)
        hist = lookup(table, hist_days, self.phase_in)
        return hist, out, x_day, y_day


class RHPForecast(_Profiles):
    """The recent-historic-profile forecast alone: no trainable parameters."""

    def forward(self, x, x_mark=None, y_mark=None, x_day=None, y_day=None, x_rhp=None,
                y_rhp=None) -> torch.Tensor:
        return self.profiles(x, x_mark, y_mark, x_day, y_day, x_rhp, y_rhp)[1]


class ReCycle(_Profiles):
    """Residual cyclic Transformer over one token per cycle (see the module docstring)."""

    def __init__(self, seq_len: int, pred_len: int, channels: int, cycle_len: int = 24,
                 rhp_cycles: int = 3, use_day_types: bool = True, d_model: int = 64,
                 n_heads: int = 4, e_layers: int = 2, d_layers: int = 1, d_ff: int = 128,
                 dropout: float = 0.05, n_marks: int = 4, profile: str = "rolling",
                 tokens: str = "per_series", window_norm: bool = False,
                 zero_init: bool = False) -> None:
        super().__init__(seq_len, pred_len, cycle_len, rhp_cycles, use_day_types, profile)
        if tokens not in TOKENS:
            raise ValueError(f"tokens must be one of {TOKENS}, got {tokens!r}")
        self.channels, self.tokens, self.window_norm = channels, tokens, window_norm
        width = cycle_len * (channels if tokens == "flat" else 1)
        meta = N_DAY_TYPES + n_marks
        self.enc_in = nn.Linear(width + meta, d_model)
        self.dec_in = nn.Linear(width + meta, d_model)
        self.enc_pos = nn.Parameter(torch.zeros(1, self.n_in, d_model))
        self.dec_pos = nn.Parameter(torch.zeros(1, self.n_out, d_model))
        nn.init.normal_(self.enc_pos, std=0.02)
        nn.init.normal_(self.dec_pos, std=0.02)
        self.transformer = nn.Transformer(d_model, n_heads, e_layers, d_layers, d_ff, dropout,
                                          activation="gelu", batch_first=True)
        self.out_dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, width)
        if zero_init:  # variant: start as the profile forecast (residual 0)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def _meta(self, days: torch.Tensor | None, marks: torch.Tensor, b: int, n_tokens: int) -> torch.Tensor:
        """Per token: day-type fractions over the cycle and the calendar marks of its first row."""
        if days is None:
            frac = marks.new_zeros(b, n_tokens, N_DAY_TYPES)
            frac[..., 0] = 1.0
        else:
            onehot = nn.functional.one_hot(days, N_DAY_TYPES).to(marks.dtype)
            frac = onehot.reshape(b, n_tokens, self.cycle, N_DAY_TYPES).mean(2)
        return torch.cat([frac, marks.reshape(b, n_tokens, self.cycle, -1)[:, :, 0]], dim=-1)

    def _tokens(self, values: torch.Tensor, days: torch.Tensor | None, marks: torch.Tensor,
                n_tokens: int) -> torch.Tensor:
        """``values [B, n·cycle, C]`` → tokens: ``[B·C, n, cycle + meta]`` per series, or
        ``[B, n, cycle·C + meta]`` flat."""
        b, c = values.shape[0], values.shape[-1]
        meta = self._meta(days, marks, b, n_tokens)
        if self.tokens == "flat":
            return torch.cat([values.reshape(b, n_tokens, self.cycle * c), meta], dim=-1)
        series = values.transpose(1, 2).reshape(b * c, n_tokens, self.cycle)
        return torch.cat([series, meta.repeat_interleave(c, dim=0)], dim=-1)

    def _pad_future(self, out, future_marks, y_day):
        """The last forecast cycle may be partial: pad it (the padding is dropped at the end)."""
        pad = self.n_out * self.cycle - self.pred_len
        if not pad:
            return out, future_marks, y_day
        out_p = torch.cat([out, out[:, -1:].expand(-1, pad, -1)], dim=1)
        marks_p = torch.cat([future_marks, future_marks[:, -1:].expand(-1, pad, -1)], dim=1)
        days_p = None if y_day is None else torch.cat([y_day, y_day[:, -1:].expand(-1, pad)], 1)
        return out_p, marks_p, days_p

    def forward(self, x, x_mark, y_mark, x_day=None, y_day=None, x_rhp=None, y_rhp=None) -> torch.Tensor:
        hist, out, x_day, y_day = self.profiles(x, x_mark, y_mark, x_day, y_day, x_rhp, y_rhp)
        b, n = x.shape[0], self.n_in * self.cycle
        out_p, marks_p, days_p = self._pad_future(out, y_mark[:, -self.pred_len:], y_day)
        if self.window_norm:  # variant: no absolute level or scale of the window reaches the model
            level = x.mean(1, keepdim=True).detach()
            spread = (x.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt().detach()
        else:
            level, spread = torch.zeros_like(x[:, :1]), torch.ones_like(x[:, :1])
        enc = self._tokens((x[:, -n:] - hist) / spread, None if x_day is None else x_day[:, -n:],
                           x_mark[:, -n:], self.n_in)
        dec = self._tokens((out_p - level) / spread, days_p, marks_p, self.n_out)
        h = self.transformer(self.enc_in(enc) + self.enc_pos, self.dec_in(dec) + self.dec_pos)
        residual = self.out(self.out_dropout(h))
        if self.tokens == "flat":
            residual = residual.reshape(b, self.n_out * self.cycle, self.channels)
        else:
            residual = residual.reshape(b, self.channels, self.n_out * self.cycle).transpose(1, 2)
        return out + residual[:, : self.pred_len] * spread
