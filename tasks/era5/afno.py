"""An AFNO forecaster in the manner of FourCastNet (Pathak et al. 2022; Guibas et al. 2021).

Patch embedding → learned positional embedding → AFNO blocks → linear head back to patches.
An AFNO block mixes tokens in Fourier space: a 2-D real FFT over the token grid, a block-diagonal
two-layer complex MLP per Fourier mode (weights shared across modes), soft-shrinkage of the result
(sparsity in the frequency domain), truncation to the lowest modes (``keep_fraction``), an
inverse FFT back to real tokens, then a residual and a channel MLP. Written for this project from
the papers' description.

The grid need not divide by the patch size: the input is padded (circularly in longitude, by
repeating the edge rows in latitude) and the output cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpectralFilter(nn.Module):
    """The AFNO token mixer on (batch, h, w, dim) tokens."""

    def __init__(self, dim: int, num_blocks: int = 8, sparsity: float = 0.01,
                 keep_fraction: float = 1.0, init_scale: float = 0.02) -> None:
        super().__init__()
        if dim % num_blocks:
            raise ValueError(f"embed_dim {dim} must be a multiple of num_blocks {num_blocks}")
        self.num_blocks, self.block = num_blocks, dim // num_blocks
        self.sparsity, self.keep_fraction = sparsity, keep_fraction
        shape = (2, num_blocks, self.block, self.block)  # [real, imaginary] parts
        self.w1 = nn.Parameter(init_scale * torch.randn(shape))
        self.b1 = nn.Parameter(init_scale * torch.randn(2, num_blocks, self.block))
        self.w2 = nn.Parameter(init_scale * torch.randn(shape))
        self.b2 = nn.Parameter(init_scale * torch.randn(2, num_blocks, self.block))

    def mode_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """True for the kept modes of an rfft2 spectrum (h, w//2+1): |k_h|, k_w below the cut."""
        kh = torch.fft.fftfreq(h, d=1.0 / h, device=device).abs()
        kw = torch.arange(w // 2 + 1, device=device)
        cut_h, cut_w = self.keep_fraction * (h // 2 + 1), self.keep_fraction * (w // 2 + 1)
        return (kh[:, None] < cut_h) & (kw[None, :] < cut_w)

    def _complex_linear(self, re: torch.Tensor, im: torch.Tensor, w: torch.Tensor,
                        b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_re = torch.einsum("...ni,nio->...no", re, w[0]) - torch.einsum("...ni,nio->...no", im, w[1])
        out_im = torch.einsum("...ni,nio->...no", im, w[0]) + torch.einsum("...ni,nio->...no", re, w[1])
        return out_re + b[0], out_im + b[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, h, w, dim = x.shape
        spec = torch.fft.rfft2(x.float(), dim=(1, 2), norm="ortho")
        spec = spec.reshape(batch, h, w // 2 + 1, self.num_blocks, self.block)
        re, im = self._complex_linear(spec.real, spec.imag, self.w1, self.b1)
        re, im = F.relu(re), F.relu(im)
        re, im = self._complex_linear(re, im, self.w2, self.b2)
        re, im = F.softshrink(re, self.sparsity), F.softshrink(im, self.sparsity)
        if self.keep_fraction < 1.0:
            keep = self.mode_mask(h, w, x.device)[None, :, :, None, None].to(re.dtype)
            re, im = re * keep, im * keep
        out = torch.complex(re, im).reshape(batch, h, w // 2 + 1, dim)
        out = torch.fft.irfft2(out, s=(h, w), dim=(1, 2), norm="ortho")
        return out.to(x.dtype) + x


class AFNOBlock(nn.Module):
    def __init__(self, dim: int, num_blocks: int, sparsity: float, keep_fraction: float,
                 mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.filter = SpectralFilter(dim, num_blocks, sparsity, keep_fraction)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.filter(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AFNONet(nn.Module):
    """(batch, channels, lat, lon) → the same shape, one time step later."""

    def __init__(self, channels: int, grid: tuple[int, int], patch: int = 8, embed_dim: int = 768,
                 depth: int = 12, num_blocks: int = 8, mlp_ratio: float = 4.0,
                 sparsity: float = 0.01, keep_fraction: float = 1.0, residual: bool = False) -> None:
        super().__init__()
        self.channels, self.grid, self.patch, self.residual = channels, grid, patch, residual
        self.pad = ((-grid[0]) % patch, (-grid[1]) % patch)
        self.tokens = ((grid[0] + self.pad[0]) // patch, (grid[1] + self.pad[1]) // patch)
        self.embed = nn.Conv2d(channels, embed_dim, kernel_size=patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, *self.tokens, embed_dim))
        self.blocks = nn.ModuleList(AFNOBlock(embed_dim, num_blocks, sparsity, keep_fraction, mlp_ratio)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, channels * patch * patch, bias=False)
        self._init()

    def _init(self) -> None:
        nn.init.trunc_normal_(self.pos, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp = x
        if self.pad[1]:
            x = F.pad(x, (0, self.pad[1], 0, 0), mode="circular")
        if self.pad[0]:
            x = F.pad(x, (0, 0, self.pad[0] // 2, self.pad[0] - self.pad[0] // 2), mode="replicate")
        t = self.embed(x).permute(0, 2, 3, 1) + self.pos
        for block in self.blocks:
            t = block(t)
        out = self.head(self.norm(t))                           # (B, h, w, C·p·p)
        b, (h, w), p = out.shape[0], self.tokens, self.patch
        out = out.reshape(b, h, w, p, p, self.channels).permute(0, 5, 1, 3, 2, 4)
        out = out.reshape(b, self.channels, h * p, w * p)
        top = self.pad[0] // 2
        out = out[:, :, top:top + self.grid[0], :self.grid[1]]
        return out + inp if self.residual else out
