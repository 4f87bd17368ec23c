"""Can the loaders feed a GPU? Samples/s through each task's own loader, per worker and with N.

ERA5 at 0.25° (721 × 1440, FourCastNet's 20 channels): a store of a few 6-hourly steps in the
WeatherBench2 layout (random fields: reading and decoding cost does not depend on the values),
written once per time chunk size (WB2-style 1 step per chunk, and the generator's 16). ImageNet:
an ImageFolder tree of generated JPEGs (the generator writes them at the crop size, 224 px),
decoded, cropped and normalised as in training. Each figure is printed beside what one GPU consumes and the CPU cores it takes to keep
it fed. Runs against the installed tree, or an older one: ``PYTHONPATH=/old/tree python ...``.

    .venv/bin/python benchmarks/data_throughput.py [--workers 0 1] [--steps 17] [--images 192]

GPU consumption, with sources:
* ResNet-50 training on one A100 80GB: 2,470 images/s with mixed precision, 938 with TF32
  (NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "Training
  performance: NVIDIA DGX A100", 1 GPU). No H100 figure from a source was at hand; none is typed in.
* FourCastNet at 0.25° on A100: Kurth et al. 2022 (arXiv:2208.05419) report whole trainings
  (67.4 min on 3,072 A100s), not a per-GPU sample rate; the 1–2 samples/s per A100 below is the
  figure of issue 21 (FourCastNet's 80-epoch training on 64 A100s), flagged as not re-derived here.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from joulebench.harness.registry import registry
from joulebench.harness.spec import RunSpec, resolve
from joulebench.tasks.era5.channels import FOURCASTNET, channel

GPU_IMAGES = {"A100 (AMP)": 2470.0, "A100 (TF32)": 938.0}
GPU_ERA5 = {"A100 (issue 21 figure)": 1.5}


def era5_store(path: Path, steps: int, chunk: int, n_lat: int, n_lon: int) -> Path:
    """A WB2-layout zarr store of the FourCastNet variables with random values."""
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    times = pd.date_range("2000-01-01", periods=steps, freq="6h")
    lat, lon = np.linspace(90, -90, n_lat), np.arange(n_lon) * 360.0 / n_lon
    chans = [channel(n) for n in FOURCASTNET]
    levels = sorted({c.level for c in chans if c.level is not None})
    data = {}
    for var in dict.fromkeys(c.variable for c in chans):
        leveled = any(c.level is not None for c in chans if c.variable == var)
        shape = (steps, len(levels), n_lat, n_lon) if leveled else (steps, n_lat, n_lon)
        dims = ("time", "level", "latitude", "longitude") if leveled else ("time", "latitude", "longitude")
        data[var] = (dims, (250 + 10 * rng.standard_normal(shape, dtype=np.float32)))
    ds = xr.Dataset(data, coords={"time": times, "level": levels, "latitude": lat, "longitude": lon})
    encoding = {v: {"chunks": (chunk, *ds[v].shape[1:])} for v in ds.data_vars}
    ds.to_zarr(path, zarr_format=2, consolidated=True, encoding=encoding)
    return path


def rate(task_name: str, preset: str, params: dict, batches: int, batch_size: int) -> float:
    """Samples/s through the task's own train loader and its ``on_device`` step (the batch decode
    of ``decode=device``; nothing for the other tasks), first batch (worker start) excluded."""
    reg = registry()
    spec = resolve(RunSpec(task=task_name, preset=preset, task_params=params))
    task = reg.task(task_name)(spec.task_params, preset, 0, torch.device("cpu"))
    task.setup()
    loader = task.train_loader(generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    on_device = getattr(task, "on_device", lambda b: b)  # older trees have no such hook
    next(it)
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = on_device(next(it))
        except StopIteration:
            break
        n += len(batch["index"])
    elapsed = time.perf_counter() - t0
    for _ in it:  # drain the epoch: workers torn down mid-send hung the next loader's start
        pass
    del it, loader
    return n / elapsed if n else float("nan")


def table(name: str, rows: list[tuple[str, float]], per_worker: float, gpus: dict[str, float]) -> None:
    print(f"\n{name}")
    for label, value in rows:
        print(f"  {label:<34} {value:10.2f} samples/s")
    for gpu, need in gpus.items():
        cores = math.ceil(need / per_worker) + 1 if per_worker > 0 else float("nan")
        print(f"  {gpu:<34} consumes {need:8.1f}/s: {cores} cores per GPU (loader workers + 1)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=17, help="ERA5 store: time steps")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--grid", type=int, nargs=2, default=[721, 1440])
    parser.add_argument("--images", type=int, default=192, help="ImageNet: train JPEGs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="keep the stores here")
    parser.add_argument("--only", choices=("era5", "imagenet"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="jb-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    has_workers = "workers" in registry().task_info("era5").params if hasattr(registry(), "task_info") \
        else "workers" in registry().tasks["era5"].params
    workers = args.workers if has_workers else [0]
    for chunk in args.chunks if args.only != "imagenet" else []:
        store = era5_store(work / f"era5-{args.grid[0]}x{args.grid[1]}-t{chunk}.zarr", args.steps, chunk,
                           *args.grid)
        rows = []
        for w in workers:
            params = {"data_dir": str(store), "train_years": "2000", "val_years": "2000",
                      "test_years": "2000", "stats_steps": 2, "preload_mb": 0.0, "batch_size": 1,
                      "climatology": "mean",  # as the full preset: month_hour at 0.25° is 4 GB per copy
                      "cache_dir": str(work / "cache"), **({"workers": w} if has_workers else {})}
            runs = [rate("era5", "small", params, args.steps - 3, 1) for _ in range(args.repeats)]
            rows.append((f"{w} workers (median of {len(runs)}; "
                         f"{min(runs):.2f}-{max(runs):.2f})", statistics.median(runs)))
        per_worker = rows[1][1] / max(workers[1], 1) if len(rows) > 1 else rows[0][1]
        table(f"ERA5 {args.grid[0]}x{args.grid[1]}, 20 channels, store time chunk {chunk}", rows,
              per_worker, GPU_ERA5)
    if args.only == "era5":
        return
    classes = 4
    img = {"dataset": "generated", "gen_classes": classes, "gen_train_per_class": args.images // classes + 2,
           "gen_val_per_class": 1, "holdout_per_class": 2, "image_size": 224, "crop_scale_min": 0.08,
           "batch_size": 32, "data_dir": str(work / "jpeg")}
    rows = []
    for w in args.workers:  # the ImageNet task had its workers parameter before
        runs = [rate("imagenet", "small", {**img, "workers": w}, args.images // 32 - 1, 32)
                for _ in range(args.repeats)]
        rows.append((f"{w} workers (median of {len(runs)}; {min(runs):.0f}-{max(runs):.0f})",
                     statistics.median(runs)))
    per_worker = rows[1][1] / max(args.workers[1], 1) if len(rows) > 1 else rows[0][1]
    if "decode" in registry().task_info("imagenet").params:
        for w in args.workers:  # bytes read in the workers, the batch decoded by decode_jpeg here (CPU)
            runs = [rate("imagenet", "small", {**img, "workers": w, "decode": "device"}, args.images // 32 - 1, 32)
                    for _ in range(args.repeats)]
            rows.append((f"decode=device on cpu, {w} workers ({min(runs):.0f}-{max(runs):.0f})",
                         statistics.median(runs)))
    table("ImageNet layout, generated 224-px JPEGs, RandomResizedCrop to 224", rows, per_worker, GPU_IMAGES)


if __name__ == "__main__":
    main()
