"""Inference speed of PETNet (batched, on the CPU) against the time-window sorter, same events.

Both read the same test split of the ``pet`` task's ``small`` preset (or ``--preset``); PETNet is
first trained for ``--train-steps`` steps so that it spikes as a trained network does (its decode
time depends on how many spikes it emits). Timings are interleaved (sorter, PETNet, sorter, ...)
so that machine noise hits both alike; each figure is the median of ``--repeats``. PETNet's time
includes building the dense spike tensors and decoding its output spikes into coincidences; the
sorter's is the vectorised numpy sorter on the sparse hit list. Both use one thread by default.

The PETNet paper reports up to 36× faster inference than the classical sorter on its hardware;
this script prints whatever ratio this machine gives.

    .venv/bin/python benchmarks/pet_inference.py [--preset small] [--batch 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from joulebench.harness.registry import registry
from joulebench.harness.runner import seed_everything
from joulebench.harness.spec import RunSpec, resolve
from joulebench.tasks.pet.metrics import match, prf, truth_table
from joulebench.tasks.pet.model import decode


def make_task(preset: str, task_params: dict):
    spec = resolve(RunSpec(task="pet", preset=preset, task_params=task_params))
    task = registry().task("pet")(spec.task_params, preset, 0, torch.device("cpu"))
    task.setup()
    return task


def petnet_predict(task, model, batch: int) -> np.ndarray:
    data = task.datasets["test"]
    parts = []
    with torch.no_grad():
        for lo in range(0, len(data), batch):
            hi = min(lo + batch, len(data))
            parts.append(decode(model(data.dense_hits(lo, hi)), task.cfg.crystals,
                                max_dev=task.cfg.spread + 1, offset=lo))
    return np.concatenate(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batch", type=int, default=1000, help="PETNet inference batch (samples)")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-T", "--task-param", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    params = dict(kv.split("=", 1) for kv in args.task_param)
    task = make_task(args.preset, params)
    sorter_task = make_task(args.preset, {**params, "model": "sorter"})
    seed_everything(0)
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    loader = task.train_loader(generator=torch.Generator().manual_seed(0))
    step = 0
    while step < args.train_steps:
        for b in loader:
            opt.zero_grad()
            task.loss(model, b).backward()
            opt.step()
            step += 1
            if step >= args.train_steps:
                break
    model.eval()
    sorter = sorter_task.build_model()
    test = task.splits["test"]
    truth = truth_table(test.pairs)

    t_sorter, t_net = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        pred_s = sorter.predict_sparse(test.hits)
        t_sorter.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pred_n = petnet_predict(task, model, args.batch)
        t_net.append(time.perf_counter() - t0)
    s, n = statistics.median(t_sorter), statistics.median(t_net)
    hits = len(test.hits)
    print(f"events: {test.n_samples} samples × {test.config.n_steps} steps, {hits} hits, "
          f"{len(truth)} true pairs ({task.cfg.rings} rings × {task.cfg.crystals} crystals)")
    print(f"sorter (window {int(sorter.window)}): {s * 1e3:9.2f} ms  {hits / s:12.0f} events/s  "
          f"F1 {prf(*match(pred_s, truth))['f1']:.3f}")
    print(f"PETNet (batch {args.batch}, {args.threads} thread(s), {args.train_steps} training "
          f"steps): {n * 1e3:9.2f} ms  {hits / n:12.0f} events/s  "
          f"F1 {prf(*match(pred_n, truth))['f1']:.3f}")
    faster = "PETNet" if n < s else "sorter"
    print(f"speed ratio PETNet/sorter throughput = {s / n:.4g}  ({faster} is faster by "
          f"{max(s, n) / min(s, n):.3g}×; the paper reports PETNet up to 36× faster on its hardware)")


if __name__ == "__main__":
    main()
