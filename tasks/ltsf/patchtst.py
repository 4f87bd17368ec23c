"""PatchTST (Nie et al., ICLR 2023, "A Time Series is Worth 64 Words"), supervised variant.

Channel independence (every channel is a univariate series through shared weights), instance
normalisation (RevIN without affine weights, as in the published scripts), patches of
``patch_len`` rows every ``stride`` rows with the end padded by ``stride`` copies of the last value
(42 patches for 336 rows, 16/8), a learnable position embedding, an encoder with BatchNorm and
residual attention scores passed from layer to layer, and a flatten-linear head.
"""

from __future__ import annotations

import torch
from torch import nn


class _BatchNormTokens(nn.Module):
    """BatchNorm1d over the model dimension of ``[N, tokens, d_model]``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class _ResidualAttention(nn.Module):
    """Multi-head self-attention whose pre-softmax scores add the previous layer's scores."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Sequential(nn.Linear(d_model, d_model), nn.Dropout(dropout))
        self.scale = self.d_head ** -0.5

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None):
        n, t, _ = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) * self.scale                  # [N, H, T, T]
        if prev is not None:
            scores = scores + prev
        out = scores.softmax(-1) @ v                                   # [N, H, T, d_head]
        return self.proj(out.transpose(1, 2).reshape(n, t, -1)), scores


class _EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.attn = _ResidualAttention(d_model, n_heads, dropout)
        self.norm1, self.norm2 = _BatchNormTokens(d_model), _BatchNormTokens(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(d_ff, d_model))
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None):
        attn, scores = self.attn(x, prev)
        x = self.norm1(x + self.drop1(attn))
        x = self.norm2(x + self.drop2(self.ff(x)))
        return x, scores


class PatchTST(nn.Module):
    def __init__(self, seq_len: int, pred_len: int, channels: int, patch_len: int = 16,
                 stride: int = 8, d_model: int = 16, n_heads: int = 4, e_layers: int = 3,
                 d_ff: int = 128, dropout: float = 0.3, head_dropout: float = 0.0,
                 revin: bool = True) -> None:
        super().__init__()
        if patch_len > seq_len + stride:
            raise ValueError(f"patch_len={patch_len} is longer than the padded input ({seq_len}+{stride})")
        self.pred_len, self.stride, self.patch_len, self.revin = pred_len, stride, patch_len, revin
        self.n_patches = (seq_len + stride - patch_len) // stride + 1
        self.embed = nn.Linear(patch_len, d_model)
        self.pos = nn.Parameter(torch.empty(self.n_patches, d_model).uniform_(-0.02, 0.02))
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(_EncoderLayer(d_model, n_heads, d_ff, dropout)
                                    for _ in range(e_layers))
        self.head = nn.Sequential(nn.Flatten(start_dim=1), nn.Dropout(head_dropout),
                                  nn.Linear(self.n_patches * d_model, pred_len))

    def forward(self, x: torch.Tensor, x_mark=None, y_mark=None, **_) -> torch.Tensor:
        b, _, c = x.shape
        if self.revin:
            mean = x.mean(1, keepdim=True).detach()
            std = (x.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt().detach()
            x = (x - mean) / std
        series = x.transpose(1, 2).reshape(b * c, -1)                       # [B·C, L]
        series = torch.cat([series, series[:, -1:].expand(-1, self.stride)], dim=1)
        patches = series.unfold(1, self.patch_len, self.stride)            # [B·C, N, patch_len]
        z = self.drop(self.embed(patches) + self.pos)
        scores = None
        for layer in self.layers:
            z, scores = layer(z, scores)
        y = self.head(z).reshape(b, c, self.pred_len).transpose(1, 2)       # [B, H, C]
        if self.revin:
            y = y * std + mean
        return y
