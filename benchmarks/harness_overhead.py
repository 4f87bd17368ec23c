"""What does the harness cost? The same model on the same data, bare and through the harness.

Runs are interleaved (bare, harness, bare, harness, ...) so that machine noise hits both alike.
Prints the step-time ratio (target ≤ 1.01) and the fixed per-run cost once the worker is warm,
i.e. harness wall time minus the bare script's set-up + training + evaluation (target ≤ 50 ms).

    .venv/bin/python benchmarks/harness_overhead.py [--steps 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from joulebench.harness.context import evaluate_model
from joulebench.harness.meters import default_meter
from joulebench.harness.registry import registry
from joulebench.harness.runner import Runner, seed_everything
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store

TASK_PARAMS = {"n_rows": 4000, "seq_len": 336, "label_len": 48, "pred_len": 96, "batch_size": 32}


def bare(steps: int) -> tuple[float, float]:
    """A plain training script: returns (seconds per step, whole-run seconds)."""
    t0 = time.perf_counter()
    task_cls = registry().task("ltsf")
    spec = resolve(RunSpec(task="ltsf", preset="tiny", task_params=TASK_PARAMS))
    seed_everything(0)
    task = task_cls(spec.task_params, "tiny", 0, torch.device("cpu"))
    task.setup()
    seed_everything(0)
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = task.train_loader(generator=torch.Generator().manual_seed(0))
    done, t_train = 0, time.perf_counter()
    while done < steps:
        for batch in loader:
            opt.zero_grad(set_to_none=True)
            loss = task.loss(model, batch)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    per_step = (time.perf_counter() - t_train) / steps
    evaluate_model(task, model, "val")
    evaluate_model(task, model, "test")
    return per_step, time.perf_counter() - t0


def harnessed(runner: Runner, steps: int, seed: int) -> tuple[float, float]:
    spec = resolve(RunSpec(task="ltsf", preset="tiny", task_params=TASK_PARAMS, seed=seed,
                           budget={"steps": steps}, eval_every=10**9))
    t0 = time.perf_counter()
    row = runner.run(spec)
    wall = time.perf_counter() - t0
    assert row["status"] == "ok", row["error"]
    return row["train_s"] / steps, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(Store(Path(tmp)), default_meter("cpu"))
        harnessed(runner, 5, seed=10_000)  # warm the worker: imports, caches, tracker
        bare(5)
        b_step, b_wall, h_step, h_wall = [], [], [], []
        for rep in range(args.repeats):
            order = [False, True] if rep % 2 == 0 else [True, False]  # alternate who goes first
            for through_harness in order:
                if through_harness:
                    s, w = harnessed(runner, args.steps, seed=rep)
                    h_step.append(s)
                    h_wall.append(w)
                else:
                    s, w = bare(args.steps)
                    b_step.append(s)
                    b_wall.append(w)
    ratio = statistics.median(h / b for h, b in zip(h_step, b_step))
    fixed = statistics.median(h - b for h, b in zip(h_wall, b_wall))
    print(f"bare step  {statistics.median(b_step) * 1e3:.3f} ms   harness step "
          f"{statistics.median(h_step) * 1e3:.3f} ms   ({args.repeats} interleaved pairs, {args.steps} steps)")
    print(f"step-time ratio harness/bare: {ratio:.4f}   (target <= 1.01)")
    print(f"fixed per-run cost (warm worker): {fixed * 1e3:.1f} ms   (target <= 50 ms)")


if __name__ == "__main__":
    main()
