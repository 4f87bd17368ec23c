"""PETNet: a spiking network (snntorch leaky neurons, surrogate gradient) that reads detector hits
as spike trains and answers with a spike on both crystals of each coincidence it finds.

The authors' setup (Helmholtz-AI-Energy/PETNet: ``SNN/*.slurm`` and their logs): a fully connected
SNN over all crystals (``train_snn.py --nodes 480``: 480 hidden leaky neurons, one or two hidden
layers), 1,000 time steps per sample, 36,000 training and 4,000 test samples, the count + timing
loss (weight 0.1), 30-60 epochs; a "plus geometry" data variant adds the detector geometry to the
input. Here the default (``arch="dense"``) is that network: the hits of every crystal (and, with
``geometry=True``, the geometry channel: each hit marks the crystals opposite it) feed ``hidden``
leaky neurons, then one output neuron per crystal; ``taps`` = 1 feeds each step as it comes
(the authors'), more taps add synaptic delay lines (an option).

``arch="local"`` is the project's earlier variant: weights shared across crystals, each crystal's
neurons seeing its own hits and a *partner* channel (the fixed geometry, or with
``geometry=False`` a learned crystal-to-crystal map), so coincidence logic is built in.

The readout pairs output spikes of nearby steps; by geometry (opposite crystals) only when the
network was given the geometry, so ``geometry=False`` is a clean ablation.
"""

from __future__ import annotations

import numpy as np
import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

from joulebench.tasks.pet.simulate import DetectorConfig


def geometry_matrix(cfg: DetectorConfig, reach: int, ring_reach: int) -> torch.Tensor:
    """G[c, c'] = 1 when c' lies within ``reach`` crystals and ``ring_reach`` rings of the crystal
    opposite c: the crystals a photon hitting c is paired with."""
    n, r = cfg.crystals, cfg.rings
    ring = np.arange(cfg.n_crystals) // n
    idx = np.arange(cfg.n_crystals) % n
    d = (idx[None, :] - idx[:, None] - n // 2) % n
    angular = np.minimum(d, n - d) <= reach
    axial = np.abs(ring[None, :] - ring[:, None]) <= ring_reach
    del r
    return torch.from_numpy((angular & axial).astype(np.float32))


def _surrogate(name: str, slope: float):
    if name == "atan":
        return surrogate.atan(alpha=slope / 12.5)
    if name == "sigmoid":
        return surrogate.sigmoid(slope=slope)
    return surrogate.fast_sigmoid(slope=slope)


class PETNet(nn.Module):
    """Two layers of leaky integrate-and-fire neurons over delayed hit and partner inputs.

    ``arch="dense"`` (default, the authors'): fully connected over all crystals (and the geometry
    channel when ``geometry=True``). ``arch="local"`` (variant) shares its weights across
    crystals: each crystal has ``hidden`` neurons that see, through ``taps`` steps of delay, its own
    hits and a *partner* channel: the fixed geometry, or with ``geometry=False`` a learned
    crystal-to-crystal map (``C × C`` weights) that must discover it.
    """

    def __init__(self, cfg: DetectorConfig, hidden: int = 480, taps: int = 1,
                 geometry: bool = True, beta: float = 0.8, surrogate_name: str = "fast_sigmoid",
                 slope: float = 5.0, reach: int | None = None, ring_reach: int = 1,
                 arch: str = "dense") -> None:
        super().__init__()
        self.cfg = cfg
        self.C = cfg.n_crystals
        self.taps = taps
        self.geometry = geometry
        self.arch = arch
        reach = cfg.spread if reach is None else reach
        if geometry:
            self.register_buffer("geo", geometry_matrix(cfg, reach, ring_reach))
        elif arch == "local":
            self.mix = nn.Linear(self.C, self.C, bias=False)
        grad = _surrogate(surrogate_name, slope)
        if arch == "local":
            self.fc1 = nn.Linear(2 * taps, hidden)
            self.fc2 = nn.Linear(hidden, 1)
        else:
            channels = 2 if geometry else 1
            self.fc1 = nn.Linear(channels * self.C * taps, hidden)
            self.fc2 = nn.Linear(hidden, self.C)
        self.lif1 = snn.Leaky(beta=beta, spike_grad=grad, learn_beta=True)
        self.lif2 = snn.Leaky(beta=beta, spike_grad=grad, learn_beta=True)

    def _delay(self, f: torch.Tensor) -> torch.Tensor:
        """(B, T, ..., F) → (B, T, ..., F · taps): each input seen 0..taps-1 steps late."""
        if self.taps == 1:
            return f
        T = f.shape[1]
        pad = torch.zeros_like(f[:, :1]).expand(-1, self.taps - 1, *f.shape[2:])
        padded = torch.cat([pad, f], dim=1)
        return torch.cat([padded[:, self.taps - 1 - k: self.taps - 1 - k + T] for k in range(self.taps)],
                         dim=-1)

    def partner(self, x: torch.Tensor) -> torch.Tensor:
        if self.geometry:
            return torch.clamp(x @ self.geo, max=1.0)
        return self.mix(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch == "local":  # (B, T, C, 2 · taps)
            return self._delay(torch.stack([x, self.partner(x)], dim=-1))
        feats = [x, torch.clamp(x @ self.geo, max=1.0)] if self.geometry else [x]
        return self._delay(torch.cat(feats, dim=-1))  # (B, T, channels · C · taps)

    @staticmethod
    def _run(lif: nn.Module, cur: torch.Tensor) -> torch.Tensor:
        mem = lif.init_leaky()
        out = []
        for t in range(cur.shape[1]):
            s, mem = lif(cur[:, t], mem)
            out.append(s)
        return torch.stack(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) binary hits → (B, T, C) output spikes (differentiable through the surrogate)."""
        spk1 = self._run(self.lif1, self.fc1(self.features(x)))
        cur2 = self.fc2(spk1)
        if self.arch == "local":
            cur2 = cur2.squeeze(-1)
        return self._run(self.lif2, cur2)


def exp_filter(s: torch.Tensor, tau: float) -> torch.Tensor:
    """Causal exponential trace of spike trains along dim 1 (the van Rossum kernel)."""
    decay = float(np.exp(-1.0 / tau))
    trace = torch.zeros_like(s[:, 0])
    out = []
    for t in range(s.shape[1]):
        trace = decay * trace + s[:, t]
        out.append(trace)
    return torch.stack(out, dim=1)


def petnet_loss(out: torch.Tensor, target: torch.Tensor, w_count: float, w_time: float,
                tau: float) -> torch.Tensor:
    """Multi-objective loss: spike count per crystal and sample (squared error) plus spike timing
    (van Rossum distance: squared error of exponentially filtered trains), weighted; both are sums
    per sample, averaged over the batch."""
    batch = out.shape[0]
    count = (out.sum(1) - target.sum(1)).pow(2).sum() / batch
    timing = (exp_filter(out, tau) - exp_filter(target, tau)).pow(2).sum() / (batch * tau)
    return w_count * count + w_time * timing


def decode(spikes: np.ndarray | torch.Tensor, crystals_per_ring: int, max_dev: int | None,
           offset: int = 0, max_dt: int = 1, merge: int = 2, lookahead: int = 16) -> np.ndarray:
    """Output spikes (B, T, C) → (sample, a, b, step) coincidences.

    Two spikes of one sample at most ``max_dt`` steps apart are candidate pairs; with ``max_dev``
    their crystals must also lie within ``max_dev`` crystals of opposite (the geometry), with
    ``None`` any two crystals pair (no geometry: the ablation). Pairs are taken greedily, the most
    back-to-back (with geometry) and simultaneous first, each spike used once, reported at the
    later spike's step. The same pair found again within ``merge`` steps counts once.
    """
    if torch.is_tensor(spikes):
        spikes = spikes.detach().cpu().numpy()
    idx = np.argwhere(spikes > 0).astype(np.int64)  # sorted by (sample, step, crystal)
    if len(idx) < 2:
        return np.zeros((0, 4), dtype=np.int64)
    n = crystals_per_ring
    cand = []
    for k in range(1, min(lookahead, len(idx) - 1) + 1):
        i = np.arange(len(idx) - k)
        j = i + k
        ok = (idx[i, 0] == idx[j, 0]) & (idx[j, 1] - idx[i, 1] <= max_dt)
        if not ok.any():
            break
        i, j = i[ok], j[ok]
        other = idx[i, 2] != idx[j, 2]  # a crystal never pairs with itself
        i, j = i[other], j[other]
        dt = idx[j, 1] - idx[i, 1]
        if max_dev is None:
            geo, cost = np.ones(len(i), dtype=bool), dt * 8 + k  # time only, nearest spikes first
        else:
            d = (idx[j, 2] % n - idx[i, 2] % n - n // 2) % n
            dev = np.minimum(d, n - d)
            geo = dev <= max_dev
            cost = dev * 4 + np.abs(idx[j, 2] // n - idx[i, 2] // n) + dt * 8
        cand.append(np.stack([cost[geo], i[geo], j[geo]], axis=1))
    cand = np.concatenate(cand) if cand else np.zeros((0, 3), dtype=np.int64)
    if len(cand) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    cand = cand[np.lexsort((cand[:, 1], cand[:, 0]))]
    used = np.zeros(len(idx), dtype=bool)
    chosen = []
    for _, i, j in cand.tolist():
        if not used[i] and not used[j]:
            used[i] = used[j] = True
            chosen.append((i, j))
    ij = np.asarray(chosen, dtype=np.int64).reshape(-1, 2)
    a, b = idx[ij[:, 0], 2], idx[ij[:, 1], 2]
    pred = np.stack([idx[ij[:, 0], 0] + offset, np.minimum(a, b), np.maximum(a, b),
                     idx[ij[:, 1], 1]], axis=1)
    if merge > 0 and len(pred):
        pred = pred[np.lexsort((pred[:, 3], pred[:, 2], pred[:, 1], pred[:, 0]))]
        same = np.r_[False, np.all(pred[1:, :3] == pred[:-1, :3], axis=1)]
        gap = np.r_[np.inf, np.diff(pred[:, 3])]
        pred = pred[~(same & (gap <= merge))]
    return pred
