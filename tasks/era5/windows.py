"""Forecast samples of one split: the state at t and the next ``length`` states, normalised.

``Frames`` hold a split's steps either in memory (read once, when they fit ``preload_mb``) or in
the store (read per sample, through the store's time chunks). Both read through ``Source.read``,
so generated and real data take the same path. ``ChunkShuffle`` orders training samples so that
the samples of one stored chunk follow each other (a chunk is decoded once per epoch, not once
per sample) while chunks and the samples inside each come in random order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from joulebench.tasks.era5.data import ChunkReader, Source
from joulebench.tasks.era5.stats import Stats, read_chunk


class Frames:
    """The normalised steps [span[0], span[1]) of a split."""

    def __init__(self, source: Source, span: tuple[int, int], stats: Stats, preload_mb: float) -> None:
        self.source, self.span = source, span
        self.mean = stats.mean.astype(np.float32)[:, None, None]
        self.std = stats.std.astype(np.float32)[:, None, None]
        n, c = span[1] - span[0], len(source.channels)
        size_mb = n * c * source.shape[0] * source.shape[1] * 4 / 2**20
        self.memory: np.ndarray | None = None
        self.reader = ChunkReader(source)
        if size_mb <= preload_mb:
            self.memory = np.empty((n, c, *source.shape), np.float32)
            step = read_chunk(source)
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                self.memory[lo:hi] = self.normalise(source.read(np.arange(span[0] + lo, span[0] + hi)))

    def __len__(self) -> int:
        return self.span[1] - self.span[0]

    @property
    def times(self) -> pd.DatetimeIndex:
        return self.source.times[self.span[0]:self.span[1]]

    def normalise(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def get(self, first: int, count: int) -> np.ndarray:
        """Steps first..first+count-1 (relative to the split), normalised: (count, C, lat, lon)."""
        if self.memory is not None:
            return self.memory[first:first + count]
        steps = np.arange(self.span[0] + first, self.span[0] + first + count)
        return self.normalise(self.reader.read(steps))


class Windows(Dataset):
    """Sample k: ``x`` = state at start k, ``y`` = the ``length`` states after it, ``index`` = k."""

    def __init__(self, frames: Frames, length: int) -> None:
        self.frames, self.length = frames, length
        starts = frames.source.window_starts(frames.span, length)
        self.starts = starts - frames.span[0]

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor | int]:
        block = torch.from_numpy(np.ascontiguousarray(self.frames.get(int(self.starts[k]), self.length + 1)))
        return {"x": block[0], "y": block[1:], "index": k}

    def target_times(self, k: np.ndarray, lead: int) -> pd.DatetimeIndex:
        """Valid times of the targets ``lead`` steps after the starts of samples ``k``."""
        return self.frames.times[self.starts[k] + lead]


class ChunkShuffle(Sampler):
    """Training order on disk: stored chunks in random order, the samples starting in each chunk
    together and shuffled among themselves; a fresh order every epoch from ``generator``."""

    def __init__(self, windows: Windows, generator: torch.Generator | None = None) -> None:
        frames = windows.frames
        chunk = frames.source.chunk_of(windows.starts + frames.span[0])
        self.groups = [np.flatnonzero(chunk == c) for c in np.unique(chunk)]
        self.generator = generator

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def __iter__(self):
        order = torch.randperm(len(self.groups), generator=self.generator).tolist()
        for g in order:
            group = self.groups[g]
            yield from group[torch.randperm(len(group), generator=self.generator).numpy()].tolist()
