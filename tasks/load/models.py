"""Point forecasters (linear, MLP, N-HiTS-style) and the conditional invertible network (cINN)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from joulebench.tasks.load.data import HORIZON


class Linear(nn.Module):
    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Linear(n_in, HORIZON)

    def forward(self, x):
        return self.net(x)


class MLP(nn.Module):
    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, HORIZON))

    def forward(self, x):
        return self.net(x)


class NHiTS(nn.Module):
    """N-HiTS-style: stacks that pool the lags at different rates, predict coarse horizon knots,
    interpolate them to 24 h, and subtract a backcast (doubly residual)."""

    def __init__(self, n_in: int, hidden: int, n_lags: int = 48, pools=(8, 4, 1)) -> None:
        super().__init__()
        self.n_lags, self.pools = n_lags, pools
        n_ctx = n_in - n_lags
        self.blocks = nn.ModuleList()
        for p in pools:
            n_pooled = math.ceil(n_lags / p)
            knots = max(HORIZON // p, 1)
            self.blocks.append(nn.ModuleDict({
                "mlp": nn.Sequential(nn.Linear(n_pooled + n_ctx, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU()),
                "back": nn.Linear(hidden, n_lags), "fore": nn.Linear(hidden, knots)}))

    def forward(self, x):
        lags, ctx = x[:, :self.n_lags], x[:, self.n_lags:]
        out = 0.0
        for p, blk in zip(self.pools, self.blocks):
            pooled = F.max_pool1d(lags[:, None], p, p, ceil_mode=True)[:, 0]
            h = blk["mlp"](torch.cat([pooled, ctx], 1))
            lags = lags - blk["back"](h)
            knots = blk["fore"](h)[:, None]
            out = out + F.interpolate(knots, size=HORIZON, mode="linear", align_corners=True)[:, 0]
        return out


POINT = {"linear": Linear, "mlp": MLP, "nhits": NHiTS}


class Coupling(nn.Module):
    """Affine coupling: half of y is scaled and shifted by a net of the other half and the condition.

    Flow layers take y of shape (..., N, H) and c of shape (N, C): sampling pushes S draws per
    window through at once, and the condition's share of the first layer is computed once per
    window, not once per draw (most of the cost of sampling)."""

    def __init__(self, dim: int, n_cond: int, hidden: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("perm", torch.randperm(dim, generator=g))
        self.register_buffer("inv", torch.argsort(self.perm))
        self.d1 = dim // 2
        self.net = nn.Sequential(nn.Linear(self.d1 + n_cond, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * (dim - self.d1)))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _st(self, a, c):
        first = self.net[0]
        h = F.linear(a, first.weight[:, :self.d1]) + F.linear(c, first.weight[:, self.d1:], first.bias)
        s, t = self.net[2](F.relu(h)).chunk(2, -1)
        return 2.0 * torch.tanh(s / 2.0), t                 # soft-clamped log-scale

    def forward(self, y, c):
        y = y[..., self.perm]
        a, b = y[..., :self.d1], y[..., self.d1:]
        s, t = self._st(a, c)
        return torch.cat([a, b * torch.exp(s) + t], -1), s.sum(-1)

    def inverse(self, z, c):
        a, b = z[..., :self.d1], z[..., self.d1:]
        s, t = self._st(a, c)
        y = torch.cat([a, (b - t) * torch.exp(-s)], -1)
        return y[..., self.inv]


class ConditionalAffine(nn.Module):
    """Elementwise shift and log-scale from the condition: a heteroscedastic Gaussian by itself.

    Zero-initialised, so it starts as the identity; it lets the flow widen or narrow the whole
    distribution per window (holidays, hour of day) without routing that through the couplings."""

    def __init__(self, dim: int, n_cond: int) -> None:
        super().__init__()
        self.net = nn.Linear(n_cond, 2 * dim)
        nn.init.zeros_(self.net.weight)
        nn.init.zeros_(self.net.bias)

    def _st(self, c):
        t, s = self.net(c).chunk(2, -1)
        return t, 3.0 * torch.tanh(s / 3.0)

    def forward(self, y, c):
        t, s = self._st(c)
        return (y - t) * torch.exp(-s), (-s.sum(-1)).expand(y.shape[:-1])

    def inverse(self, z, c):
        t, s = self._st(c)
        return z * torch.exp(s) + t


class LUMix(nn.Module):
    """Invertible linear map W = L·U (unit lower L, upper U with exp diagonal), identity at start.

    The 24 residuals of one window are strongly correlated (a forecast that is too low is too low
    all day); one linear layer captures that exactly, which coupling blocks learn only slowly."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.register_buffer("mask", torch.tril(torch.ones(dim, dim), -1))
        self.register_buffer("eye", torch.eye(dim))

    def _lu(self):
        lower = self.lower * self.mask + self.eye
        upper = self.upper * self.mask.T + torch.diag(torch.exp(self.log_diag))
        return lower, upper

    def forward(self, y, c):
        lower, upper = self._lu()
        return y @ (lower @ upper).T, self.log_diag.sum().expand(y.shape[:-1])

    def inverse(self, z, c):
        lower, upper = self._lu()
        inv_l = torch.linalg.solve_triangular(lower, self.eye, upper=False, unitriangular=True)
        inv_u = torch.linalg.solve_triangular(upper, self.eye, upper=True)
        return z @ (inv_u @ inv_l).T


class CINN(nn.Module):
    """Conditional INN over 24 h: of the target given the covariates (AutoPQ, ``with_point=False``)
    or of the residual given the covariates and the (detached) point forecast (the earlier variant).

    ``scale`` (per horizon hour, fixed) divides the input first so that the flow sees values of
    order one from the start; ``head`` adds a conditional elementwise affine and a linear mix before
    the coupling blocks (``head=False``: couplings only, the earlier design)."""

    def __init__(self, n_feat: int, blocks: int, hidden: int, scale: torch.Tensor | float = 1.0,
                 head: bool = True, with_point: bool = True) -> None:
        super().__init__()
        self.with_point = with_point
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).expand(HORIZON).clone())
        self.cond = nn.Sequential(nn.Linear(n_feat + HORIZON * with_point, hidden), nn.ReLU())
        head_layers = [ConditionalAffine(HORIZON, hidden), LUMix(HORIZON)] if head else []
        self.blocks = nn.ModuleList(head_layers + [Coupling(HORIZON, hidden, hidden, seed=i)
                                                   for i in range(blocks)])

    def condition(self, x, point=None):
        """The flow's condition: the covariates, and the point forecast when the flow was built
        ``with_point`` (AutoPQ's flow never sees the point forecast while training)."""
        return self.cond(torch.cat([x, point], 1) if self.with_point else x)

    def forward(self, y, c):
        """y (..., N, 24) ↦ latent z and log|det ∂z/∂y| (..., N); c (N, hidden)."""
        y = y / self.scale
        logdet = -torch.log(self.scale).sum().expand(y.shape[:-1])
        for blk in self.blocks:
            y, ld = blk(y, c)
            logdet = logdet + ld
        return y, logdet

    def inverse(self, z, c):
        for blk in reversed(self.blocks):
            z = blk.inverse(z, c)
        return z * self.scale

    def nll(self, y, c):
        z, logdet = self(y, c)
        return (0.5 * z.pow(2).sum(-1) - logdet).mean() / HORIZON + 0.5 * math.log(2 * math.pi)


def latent_neighbourhood(z0: torch.Tensor, noise: torch.Tensor, spread: float,
                         relative: bool) -> torch.Tensor:
    """Latent samples (S, N, H) around the centres ``z0`` (N, H) from standard normal ``noise``.

    ``relative``: z = z0 · (1 + spread·ε), the authors' sampling (a normal of mean 1 and std
    ``spread`` times the point forecast's latent, so the spread scales with |z0|); otherwise
    z = z0 + spread·ε. Both have mean z0: the samples centre on the point forecast's latent."""
    return z0 * (1 + spread * noise) if relative else z0 + spread * noise


def residual_scale(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Per-horizon std of a ridge regression's residual on the training windows: the size of the
    errors a point forecaster leaves, known before training, to normalise the cINN's input."""
    xb = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    eye = torch.eye(xb.shape[1], dtype=xb.dtype)
    coef = torch.linalg.solve(xb.T @ xb + ridge * len(x) * eye, xb.T @ y.double())
    return (y.double() - xb @ coef).std(0).float().clamp_min(1e-6)


class QuantileWidths(nn.Module):
    """Quantile regression around a median net: the gaps between neighbouring quantile levels are
    softplus outputs of a small net of the features, summed outwards from the median, so that the
    quantiles never cross. ``levels`` must be sorted, odd in number, with 0.5 in the middle."""

    def __init__(self, n_feat: int, hidden: int, levels: tuple[float, ...]) -> None:
        super().__init__()
        self.n_side = len(levels) // 2
        if len(levels) % 2 == 0 or levels[self.n_side] != 0.5:
            raise ValueError(f"quantile levels {levels} need an odd count with 0.5 in the middle")
        self.levels = levels
        self.net = nn.Sequential(nn.Linear(n_feat, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * self.n_side * HORIZON))

    def forward(self, x, median):
        """Quantiles (L, N, 24) with ``median`` (N, 24) at level 0.5."""
        gaps = F.softplus(self.net(x)).view(len(x), 2, self.n_side, HORIZON) + 1e-4
        below = median[:, None] - gaps[:, 0].cumsum(1)                 # levels just below 0.5 first
        above = median[:, None] + gaps[:, 1].cumsum(1)
        return torch.cat([below.flip(1), median[:, None], above], 1).transpose(0, 1)


class LoadModel(nn.Module):
    """All parts in one module, so that one training loop (the method's) trains and meters them:
    the point forecaster and either the cINN or the quantile regression's widths (or neither)."""

    def __init__(self, point: nn.Module, cinn: nn.Module | None,
                 widths: QuantileWidths | None = None) -> None:
        super().__init__()
        self.point, self.cinn, self.widths = point, cinn, widths

    def forward(self, x):
        return self.point(x)
