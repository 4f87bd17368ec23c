"""LTSF models. All take ``(x, x_mark, y_mark)`` batches and return ``[B, pred_len, channels]``."""

from __future__ import annotations

import math

import torch
from torch import nn


class MovingAverage(nn.Module):
    """Moving average over time with the ends padded by repetition (DLinear's trend extractor)."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.pool = nn.AvgPool1d(kernel_size, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, L, C]
        front = x[:, :1].repeat(1, (self.kernel_size - 1) // 2, 1)
        end = x[:, -1:].repeat(1, self.kernel_size // 2, 1)
        padded = torch.cat([front, x, end], dim=1)
        return self.pool(padded.transpose(1, 2)).transpose(1, 2)


class DLinear(nn.Module):
    """DLinear (Zeng et al., AAAI 2023): series decomposition, one linear map per component."""

    def __init__(self, seq_len: int, pred_len: int, channels: int, kernel_size: int = 25,
                 individual: bool = False) -> None:
        super().__init__()
        self.decomp = MovingAverage(kernel_size)
        self.individual, self.channels = individual, channels
        n = channels if individual else 1
        self.seasonal = nn.ModuleList(nn.Linear(seq_len, pred_len) for _ in range(n))
        self.trend = nn.ModuleList(nn.Linear(seq_len, pred_len) for _ in range(n))

    def forward(self, x: torch.Tensor, x_mark=None, y_mark=None) -> torch.Tensor:
        trend = self.decomp(x)
        seasonal = (x - trend).transpose(1, 2)
        trend = trend.transpose(1, 2)
        if self.individual:
            out = torch.stack([self.seasonal[i](seasonal[:, i]) + self.trend[i](trend[:, i])
                               for i in range(self.channels)], dim=1)
        else:
            out = self.seasonal[0](seasonal) + self.trend[0](trend)
        return out.transpose(1, 2)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, max_len: int = 5000) -> None:
        super().__init__()
        pos = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div[: d_model // 2])
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, length: int) -> torch.Tensor:
        return self.pe[:length]


class DataEmbedding(nn.Module):
    """Value (circular conv, as in Informer's TokenEmbedding) + calendar + sinusoidal position."""

    def __init__(self, channels: int, d_model: int, n_marks: int, dropout: float) -> None:
        super().__init__()
        self.value = nn.Conv1d(channels, d_model, kernel_size=3, padding=1, padding_mode="circular",
                               bias=False)
        self.temporal = nn.Linear(n_marks, d_model, bias=False)
        self.position = PositionalEncoding(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mark: torch.Tensor) -> torch.Tensor:
        v = self.value(x.transpose(1, 2)).transpose(1, 2)
        return self.dropout(v + self.temporal(mark) + self.position(x.shape[1]))


class VanillaTransformer(nn.Module):
    """The encoder-decoder Transformer baseline of the LTSF benchmarks (Informer's "Transformer").

    The decoder input is the last ``label_len`` known rows followed by zeros for the horizon, with
    a causal mask; the last ``pred_len`` outputs are the forecast.
    """

    def __init__(self, seq_len: int, label_len: int, pred_len: int, channels: int, d_model: int = 64,
                 n_heads: int = 4, e_layers: int = 2, d_layers: int = 1, d_ff: int = 128,
                 dropout: float = 0.05, n_marks: int = 4) -> None:
        super().__init__()
        self.label_len, self.pred_len = label_len, pred_len
        self.enc_embedding = DataEmbedding(channels, d_model, n_marks, dropout)
        self.dec_embedding = DataEmbedding(channels, d_model, n_marks, dropout)
        self.transformer = nn.Transformer(d_model, n_heads, e_layers, d_layers, d_ff, dropout,
                                          activation="gelu", batch_first=True)
        self.projection = nn.Linear(d_model, channels)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor, y_mark: torch.Tensor) -> torch.Tensor:
        dec_in = torch.cat([x[:, -self.label_len:], torch.zeros_like(x[:, : self.pred_len])], dim=1)
        enc = self.enc_embedding(x, x_mark)
        dec = self.dec_embedding(dec_in, y_mark)
        mask = nn.Transformer.generate_square_subsequent_mask(dec.shape[1], device=dec.device)
        out = self.transformer(enc, dec, tgt_mask=mask, tgt_is_causal=True)
        return self.projection(out)[:, -self.pred_len:]
