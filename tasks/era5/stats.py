"""Normalisation statistics and climatology, from the training years only.

Per channel: mean and standard deviation over every training step and grid point (FourCastNet's
global z-score). Climatology (the reference of ACC and the climatology baseline): per grid point
either the time mean of the training years (``mean``, FourCastNet's ``time_means``) or one mean
per calendar month and hour of day (``month_hour``, close to WeatherBench2's day-of-year × hour
climatology). ``stats_steps`` > 0 estimates them from that many evenly spaced training steps (for
real data, where reading every step costs hours); results of such runs are cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pandas as pd

from joulebench.tasks.era5.data import Source

READ_STEPS = 32
"""Steps read at once by the statistics pass and the preload (rounded to whole stored chunks)."""


@dataclass
class Stats:
    mean: np.ndarray      # (C,) float64
    std: np.ndarray       # (C,) float64
    clim: np.ndarray      # (bins, C, lat, lon) float32, physical units
    kind: str             # "mean" or "month_hour"
    step_hours: int

    def bins(self, times: pd.DatetimeIndex) -> np.ndarray:
        """Climatology bin of each time."""
        if self.kind == "mean":
            return np.zeros(len(times), dtype=np.int64)
        per_day = 24 // self.step_hours
        return ((times.month - 1) * per_day + times.hour // self.step_hours).to_numpy(np.int64)

    def normalised_clim(self) -> np.ndarray:
        return ((self.clim - self.mean[None, :, None, None]) / self.std[None, :, None, None]).astype(np.float32)


def n_bins(kind: str, step_hours: int) -> int:
    return 1 if kind == "mean" else 12 * (24 // step_hours)


def read_chunk(source: Source) -> int:
    """``READ_STEPS`` rounded up to whole stored time chunks (no chunk decoded twice)."""
    return -(-READ_STEPS // source.time_chunk) * source.time_chunk


def check_memory(bins: int, channels: int, grid: tuple[int, int]) -> None:
    """Refuse a climatology this machine cannot hold, before reading a step: ``month_hour`` at
    0.25° is 48 bins × 20 channels × 721 × 1440 points, 4 GB per float32 copy and 8 GB of float64
    sums while computing (it was OOM-killed on a 24 GB machine); the task keeps two copies."""
    need = bins * channels * grid[0] * grid[1] * (8 + 4 + 4)
    available = psutil.virtual_memory().available
    if need > available:
        raise MemoryError(f"the {bins}-bin climatology of {channels} channels on {grid[0]}x{grid[1]} needs "
                          f"~{need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB are available: use "
                          "-T climatology=mean (the full preset's) or fewer channels")


def compute(source: Source, span: tuple[int, int], kind: str, stats_steps: int = 0) -> Stats:
    """One streaming pass over the training steps, read in whole stored chunks. The data stay
    float32 (a float64 copy of every chunk doubled the memory traffic); each chunk's sums are
    reduced with float64 accumulators around a reference mean, which keeps the variance exact to
    float32 resolution, and the climatology sums are float64 per grid point."""
    steps = np.arange(*span)
    if 0 < stats_steps < len(steps):
        steps = np.unique(np.linspace(span[0], span[1] - 1, stats_steps).round().astype(np.int64))
    c = len(source.channels)
    check_memory(n_bins(kind, source.step_hours), c, source.shape)
    helper = Stats(np.zeros(c), np.ones(c), np.zeros(0), kind, source.step_hours)
    bins = helper.bins(source.times[steps])
    sums = np.zeros((n_bins(kind, source.step_hours), c, *source.shape))
    counts = np.zeros(len(sums))
    ref = s1 = s2 = None
    for lo, hi in _chunk_bounds(source, steps):
        x = source.read(steps[lo:hi])
        if ref is None:
            ref = x.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)  # exact in both types
            s1, s2 = np.zeros(c), np.zeros(c)
        shifted = x - ref[None, :, None, None]
        s1 += shifted.sum(axis=(0, 2, 3), dtype=np.float64)
        s2 += np.einsum("tchw,tchw->c", shifted, shifted, dtype=np.float64)
        for b in np.unique(bins[lo:hi]):
            inside = bins[lo:hi] == b
            sums[b] += x[inside].sum(axis=0, dtype=np.float64)
            counts[b] += inside.sum()
    n = len(steps) * source.shape[0] * source.shape[1]
    mean_shift = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean_shift**2, 0.0))
    overall = sums.sum(axis=0) / counts.sum()
    clim = np.where(counts[:, None, None, None] > 0, sums / np.maximum(counts, 1)[:, None, None, None],
                    overall[None])
    return Stats(ref.astype(np.float64) + mean_shift, np.where(std > 0, std, 1.0), clim.astype(np.float32), kind,
                 source.step_hours)


def _chunk_bounds(source: Source, steps: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) ranges of ``steps`` covering whole stored chunks, about ``READ_STEPS`` steps each."""
    chunk = source.chunk_of(steps)
    starts = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1]])
    per_read = max(1, READ_STEPS // source.time_chunk)
    edges = [*starts[::per_read].tolist(), len(steps)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def cached(source: Source, span: tuple[int, int], kind: str, stats_steps: int, cache: Path) -> Stats:
    """``compute`` once per store, channels, years and settings; kept as .npz under ``cache``."""
    store = Path(source.path)
    fingerprint = json.dumps({
        "path": str(store.resolve()), "mtime": store.stat().st_mtime,
        "channels": [c.name for c in source.channels], "first": str(source.times[span[0]]),
        "last": str(source.times[span[1] - 1]), "step": source.step_hours, "kind": kind,
        "stats_steps": stats_steps, "version": 2}, sort_keys=True)
    path = cache / "stats" / f"{hashlib.sha256(fingerprint.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as z:
            return Stats(z["mean"], z["std"], z["clim"], kind, source.step_hours)
    stats = compute(source, span, kind, stats_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.npz")
    np.savez(tmp, mean=stats.mean, std=stats.std, clim=stats.clim, fingerprint=fingerprint)
    os.replace(tmp, path)
    return stats
