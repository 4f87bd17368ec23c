"""Autoformer (Wu et al., NeurIPS 2021): series decomposition inside every layer and
auto-correlation in place of attention.

Auto-correlation finds the ``factor · ln(L)`` most correlated lags of queries and keys through the
FFT (Wiener-Khinchin) and aggregates the values rolled by those lags, weighted by the softmax of
their correlations. Encoder layers drop the trend (moving average of ``kernel_size``) after the
attention and the feed-forward part; decoder layers accumulate it, project it to the channels and
add it to a trend initialised from the input's trend and mean.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from joulebench.tasks.ltsf.models import MovingAverage


class Decomposition(nn.Module):
    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.average = MovingAverage(kernel_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = self.average(x)
        return x - trend, trend


class SeasonalNorm(nn.Module):
    """LayerNorm followed by removing the time mean (Autoformer's normalisation of seasonal parts)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return x - x.mean(1, keepdim=True)


class AutoCorrelation(nn.Module):
    """Multi-head auto-correlation with per-sample top-k time-delay aggregation."""

    def __init__(self, d_model: int, n_heads: int, factor: float, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.factor = n_heads, factor
        self.q, self.k = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.v, self.o = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        b, length, d = queries.shape
        h = self.n_heads
        q = self.q(queries).reshape(b, length, h, -1)
        k, v = self.k(keys), self.v(values)
        s = keys.shape[1]
        if s < length:  # cross-correlation with a shorter memory: pad with zeros
            pad = torch.zeros(b, length - s, d, dtype=k.dtype, device=k.device)
            k, v = torch.cat([k, pad], 1), torch.cat([v, pad], 1)
        k = k[:, :length].reshape(b, length, h, -1)
        v = v[:, :length].reshape(b, length, h, -1)
        q_f = torch.fft.rfft(q.permute(0, 2, 3, 1), dim=-1)
        k_f = torch.fft.rfft(k.permute(0, 2, 3, 1), dim=-1)
        corr = torch.fft.irfft(q_f * torch.conj(k_f), n=length, dim=-1)      # [B, H, E, L]
        score = corr.mean(dim=(1, 2))                                         # [B, L]
        top_k = max(1, min(length, int(self.factor * math.log(length))))
        weights, delays = torch.topk(score, top_k, dim=-1)                    # [B, k]
        weights = self.drop(torch.softmax(weights, dim=-1))
        values_t = v.permute(0, 2, 3, 1)                                      # [B, H, E, L]
        doubled = torch.cat([values_t, values_t], dim=-1)
        base = torch.arange(length, device=v.device)
        out = torch.zeros_like(values_t)
        for i in range(top_k):  # roll every sample's values by its own i-th delay
            index = (base.unsqueeze(0) + delays[:, i:i + 1]).reshape(b, 1, 1, length)
            rolled = torch.gather(doubled, -1, index.expand(-1, h, values_t.shape[2], -1))
            out = out + rolled * weights[:, i].reshape(b, 1, 1, 1)
        return self.o(out.permute(0, 3, 1, 2).reshape(b, length, d))


class _FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff, bias=False), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(d_ff, d_model, bias=False), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EncoderLayer(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, kernel_size, factor, dropout) -> None:
        super().__init__()
        self.attn = AutoCorrelation(d_model, n_heads, factor, dropout)
        self.ff = _FeedForward(d_model, d_ff, dropout)
        self.decomp1, self.decomp2 = Decomposition(kernel_size), Decomposition(kernel_size)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.decomp1(x + self.drop(self.attn(x, x, x)))
        x, _ = self.decomp2(x + self.ff(x))
        return x


class DecoderLayer(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, kernel_size, factor, dropout, channels) -> None:
        super().__init__()
        self.self_attn = AutoCorrelation(d_model, n_heads, factor, dropout)
        self.cross_attn = AutoCorrelation(d_model, n_heads, factor, dropout)
        self.ff = _FeedForward(d_model, d_ff, dropout)
        self.decomps = nn.ModuleList(Decomposition(kernel_size) for _ in range(3))
        self.drop = nn.Dropout(dropout)
        self.trend_proj = nn.Conv1d(d_model, channels, kernel_size=3, padding=1,
                                    padding_mode="circular", bias=False)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, t1 = self.decomps[0](x + self.drop(self.self_attn(x, x, x)))
        x, t2 = self.decomps[1](x + self.drop(self.cross_attn(x, memory, memory)))
        x, t3 = self.decomps[2](x + self.ff(x))
        trend = self.trend_proj((t1 + t2 + t3).transpose(1, 2)).transpose(1, 2)
        return x, trend


class _Embedding(nn.Module):
    """Value (circular convolution) and calendar embedding, no positional encoding."""

    def __init__(self, channels: int, d_model: int, n_marks: int, dropout: float) -> None:
        super().__init__()
        self.value = nn.Conv1d(channels, d_model, kernel_size=3, padding=1, padding_mode="circular",
                               bias=False)
        self.temporal = nn.Linear(n_marks, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mark: torch.Tensor) -> torch.Tensor:
        return self.drop(self.value(x.transpose(1, 2)).transpose(1, 2) + self.temporal(mark))


class Autoformer(nn.Module):
    def __init__(self, seq_len: int, label_len: int, pred_len: int, channels: int,
                 d_model: int = 64, n_heads: int = 4, e_layers: int = 2, d_layers: int = 1,
                 d_ff: int = 128, dropout: float = 0.05, kernel_size: int = 25, factor: float = 3.0,
                 n_marks: int = 4) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.label_len, self.pred_len = label_len, pred_len
        self.decomp = Decomposition(kernel_size)
        self.enc_embedding = _Embedding(channels, d_model, n_marks, dropout)
        self.dec_embedding = _Embedding(channels, d_model, n_marks, dropout)
        self.encoder = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, kernel_size, factor, dropout)
                                     for _ in range(e_layers))
        self.enc_norm = SeasonalNorm(d_model)
        self.decoder = nn.ModuleList(DecoderLayer(d_model, n_heads, d_ff, kernel_size, factor, dropout,
                                                  channels) for _ in range(d_layers))
        self.dec_norm = SeasonalNorm(d_model)
        self.projection = nn.Linear(d_model, channels)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor, y_mark: torch.Tensor, **_) -> torch.Tensor:
        seasonal, trend = self.decomp(x)
        mean = x.mean(1, keepdim=True).expand(-1, self.pred_len, -1)
        zeros = torch.zeros_like(mean)
        trend = torch.cat([trend[:, x.shape[1] - self.label_len:], mean], dim=1)
        seasonal = torch.cat([seasonal[:, x.shape[1] - self.label_len:], zeros], dim=1)
        memory = self.enc_embedding(x, x_mark)
        for layer in self.encoder:
            memory = layer(memory)
        memory = self.enc_norm(memory)
        z = self.dec_embedding(seasonal, y_mark)
        for layer in self.decoder:
            z, residual_trend = layer(z, memory)
            trend = trend + residual_trend
        out = trend + self.projection(self.dec_norm(z))
        return out[:, -self.pred_len:]
