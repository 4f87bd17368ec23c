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
    """Affine coupling: half of y is scaled and shifted by a net of the other half and the condition."""

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
        s, t = self.net(torch.cat([a, c], 1)).chunk(2, 1)
        return 2.0 * torch.tanh(s / 2.0), t                 # soft-clamped log-scale

    def forward(self, y, c):
        y = y[:, self.perm]
        a, b = y[:, :self.d1], y[:, self.d1:]
        s, t = self._st(a, c)
        return torch.cat([a, b * torch.exp(s) + t], 1), s.sum(1)

    def inverse(self, z, c):
        a, b = z[:, :self.d1], z[:, self.d1:]
        s, t = self._st(a, c)
        y = torch.cat([a, (b - t) * torch.exp(-s)], 1)
        return y[:, self.inv]


class CINN(nn.Module):
    """Conditional INN over the 24 h target; condition = features and the (detached) point forecast."""

    def __init__(self, n_feat: int, blocks: int, hidden: int) -> None:
        super().__init__()
        self.cond = nn.Sequential(nn.Linear(n_feat + HORIZON, hidden), nn.ReLU())
        self.blocks = nn.ModuleList(Coupling(HORIZON, hidden, hidden, seed=i) for i in range(blocks))

    def condition(self, x, point):
        return self.cond(torch.cat([x, point], 1))

    def forward(self, y, c):
        logdet = torch.zeros(len(y), device=y.device)
        for blk in self.blocks:
            y, ld = blk(y, c)
            logdet = logdet + ld
        return y, logdet

    def inverse(self, z, c):
        for blk in reversed(self.blocks):
            z = blk.inverse(z, c)
        return z

    def nll(self, y, c):
        z, logdet = self(y, c)
        return (0.5 * z.pow(2).sum(1) - logdet).mean() / HORIZON + 0.5 * math.log(2 * math.pi)


class LoadModel(nn.Module):
    """Both parts in one module, so that one training loop (the method's) trains and meters both."""

    def __init__(self, point: nn.Module, cinn: nn.Module | None) -> None:
        super().__init__()
        self.point, self.cinn = point, cinn

    def forward(self, x):
        return self.point(x)
