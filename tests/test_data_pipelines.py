"""Data pipelines of tasks read from disk: loader workers from the run's cores, ERA5 reads through
the store's time chunks (one decode serving several samples) and float32 streaming statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.harness.task import MAX_AUTO_WORKERS, auto_workers
from joulebench.tasks.era5 import stats as era5_stats
from joulebench.tasks.era5.channels import parse_channels
from joulebench.tasks.era5.data import Source
from joulebench.tasks.era5.generate import GenConfig, ensure_store
from joulebench.tasks.era5.windows import ChunkShuffle, Frames, Windows

SMALL = GenConfig(n_lat=8, n_lon=16, first_year=2000, last_year=2000, days_per_month=4)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pipeline-cache")


@pytest.fixture(scope="module")
def store(cache: Path) -> Path:
    return ensure_store(SMALL, str(cache))  # written with 16 steps per time chunk


class CountingSource(Source):
    """The real reader, counting how many stored chunks each read decodes."""

    decoded = 0

    def read(self, steps):
        self.decoded += len(np.unique(self.chunk_of(np.atleast_1d(steps))))
        return super().read(steps)


def test_auto_workers_leave_one_core_to_training_and_are_capped() -> None:
    assert auto_workers(1) == 0 and auto_workers(4) == 3
    assert auto_workers(64) == MAX_AUTO_WORKERS


def test_reads_on_disk_decode_each_chunk_once_for_consecutive_windows(store: Path) -> None:
    src = CountingSource(store, parse_channels("t2m,z500"))
    assert src.time_chunk == 16
    span = src.split_steps((2000, 2000))
    stats = era5_stats.compute(src, span, "mean")
    src.decoded = 0
    windows = Windows(Frames(src, span, stats, preload_mb=0.0), 1)
    items = [windows[k] for k in range(len(windows))]
    chunks = len(np.unique(src.chunk_of(np.arange(*span))))
    assert src.decoded <= chunks + 1  # was one decode per sample (16 x more here)
    raw = Source(store, parse_channels("t2m,z500")).read(np.array([windows.starts[7] + span[0]]))[0]
    assert np.allclose(items[7]["x"].numpy() * stats.std[:, None, None] + stats.mean[:, None, None], raw,
                       rtol=1e-5)


def test_chunk_shuffle_keeps_a_chunk_together_and_varies_by_epoch(store: Path) -> None:
    src = Source(store, parse_channels("t2m"))
    span = src.split_steps((2000, 2000))
    windows = Windows(Frames(src, span, era5_stats.compute(src, span, "mean"), 0.0), 1)
    sampler = ChunkShuffle(windows, torch.Generator().manual_seed(0))
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(len(windows))) and first != second
    chunk = src.chunk_of(windows.starts[first] + span[0])
    assert (np.diff(chunk) != 0).sum() == len(np.unique(chunk)) - 1  # each chunk in one stretch


def test_float32_statistics_match_a_float64_reference(store: Path) -> None:
    src = Source(store, parse_channels("full"))
    span = src.split_steps((2000, 2000))
    stats = era5_stats.compute(src, span, "month_hour")
    x = src.read(np.arange(*span)).astype(np.float64)
    std = x.std(axis=(0, 2, 3))
    # in units of each channel's spread, what normalisation sees (a mean near 0 has no rtol)
    assert (np.abs(stats.mean - x.mean(axis=(0, 2, 3))) / std).max() < 1e-6
    assert np.allclose(stats.std, std, rtol=1e-6)
    times = src.times[span[0]:span[1]]
    july_noon = (times.month == 7) & (times.hour == 12)
    assert np.allclose(stats.clim[stats.bins(times[july_noon])[0]], x[july_noon].mean(axis=0), rtol=1e-6)


def test_era5_from_disk_with_loader_workers_trains_like_one_process(results: Path, cache: Path) -> None:
    """Workers change where samples are read, not which: the rows agree to the last digit."""
    rows = []
    for workers in (0, 2):
        spec = resolve(RunSpec(task="era5", preset="tiny", budget={"steps": 6}, eval_every=10**6,
                               task_params={"cache_dir": str(cache), "preload_mb": 0.0,
                                            "workers": workers}))
        rows.append(Runner(Store(results)).run(spec))
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    assert rows[0]["primary_value"] == rows[1]["primary_value"]
