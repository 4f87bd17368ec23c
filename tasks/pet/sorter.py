"""The classical time-window coincidence sorter, vectorised over all samples with numpy.

Hits are sorted by time; consecutive hits closer than ``window`` steps (gap ≤ window) form a group;
a group of exactly two hits in two different crystals is a coincidence, reported at the step of its
later hit. ``accept`` ≥ 0 adds the usual geometric acceptance: the two crystals must lie within
``accept`` crystals of being opposite in the ring (-1: off, as in the plain sorter).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def sort_coincidences(hits: np.ndarray, window: int, crystals_per_ring: int | None = None,
                      accept: int = -1) -> np.ndarray:
    """(sample, a, b, step) rows from (sample, step, crystal) hit rows (any order)."""
    h = np.asarray(hits, dtype=np.int64).reshape(-1, 3)
    if len(h) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    h = h[np.lexsort((h[:, 2], h[:, 1], h[:, 0]))]
    new = np.ones(len(h), dtype=bool)
    new[1:] = (h[1:, 0] != h[:-1, 0]) | (h[1:, 1] - h[:-1, 1] > window)
    group = np.cumsum(new) - 1
    size = np.bincount(group)
    start = np.flatnonzero(new)
    two = start[size == 2]
    first, second = h[two], h[two + 1]
    ok = first[:, 2] != second[:, 2]
    if accept >= 0 and crystals_per_ring:
        n = crystals_per_ring
        d = (second[:, 2] % n - first[:, 2] % n - n // 2) % n
        ok &= np.minimum(d, n - d) <= accept
    first, second = first[ok], second[ok]
    return np.stack([first[:, 0], np.minimum(first[:, 2], second[:, 2]),
                     np.maximum(first[:, 2], second[:, 2]), second[:, 1]], axis=1)


class TimeWindowSorter(nn.Module):
    """The sorter as a model: no trainable parameters; its window is a buffer a method may set."""

    def __init__(self, window: int, crystals_per_ring: int, accept: int = -1) -> None:
        super().__init__()
        self.register_buffer("window", torch.tensor(int(window)))
        self.crystals_per_ring = crystals_per_ring
        self.accept = accept

    def predict_sparse(self, hits: np.ndarray) -> np.ndarray:
        return sort_coincidences(hits, int(self.window), self.crystals_per_ring, self.accept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dense hits (B, T, C) → (sample, a, b, step) rows as a tensor."""
        idx = torch.nonzero(x > 0).cpu().numpy()
        return torch.from_numpy(self.predict_sparse(idx))
