"""Forward gradients against backprop: step time and cosine to the true gradient, per k.

One LTSF batch, one model. For each k in --ks and each combination (mean, projection) it times
the gradient estimate (k jvps, no backward pass) and a backprop gradient (forward + backward),
interleaved in a shuffled order, repeat after repeat, so that machine noise hits all alike, and reports the median
and the minimum time relative to backprop (on a shared machine times are bimodal; the minimum is
the less noisy figure). Cosine similarity to the true gradient is averaged over --draws
estimates (fresh tangents each) on the same batch; it is computed outside the timed region.

    .venv/bin/python benchmarks/forward_gradient_bench.py [--model mlp] [--preset small]
        [--ks 1,2,4,16] [--repeats 7] [--draws 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from joulebench.harness.registry import registry
from joulebench.harness.runner import seed_everything
from joulebench.harness.spec import RunSpec, resolve
from joulebench.methods.forward_gradient import _LossCall, weight_forward_gradient


def setup(model_name: str, preset: str, device: str):
    spec = resolve(RunSpec(task="ltsf", preset=preset, task_params={"model": model_name}))
    seed_everything(0)
    task = registry().task("ltsf")(spec.task_params, preset, 0, torch.device(device))
    task.setup()
    model = task.build_model().to(device)
    batch = next(iter(task.train_loader(generator=torch.Generator().manual_seed(0))))
    batch = {k: v.to(device) for k, v in batch.items()}
    return task, model, batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--ks", default="1,2,4,16")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    task, model, batch = setup(args.model, args.preset, args.device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    n = sum(p.numel() for p in params)
    wrapper = _LossCall(task, model)
    keys = ["model." + name for name, _ in named]

    def fn(*ps):
        return torch.func.functional_call(wrapper, dict(zip(keys, ps, strict=False)), (batch,))

    def backprop():
        for p in params:
            p.grad = None
        task.loss(model, batch).backward()
        return torch.cat([p.grad.reshape(-1) for p in params])

    gen = torch.Generator(device=device).manual_seed(0)

    def forward(k: int, combine: str):
        _, est = weight_forward_gradient(fn, params, k=k, combine=combine, generator=gen)
        return torch.cat([g.reshape(-1) for g in est])

    configs = {"backprop": backprop}
    for k in ks:
        for combine in ("mean", "projection"):
            configs[f"{combine} k={k}"] = lambda k=k, combine=combine: forward(k, combine)
    for f in configs.values():  # warm-up
        f()
    times: dict[str, list[float]] = {name: [] for name in configs}
    order = list(configs)
    for repeat in range(args.repeats):
        random.Random(repeat).shuffle(order)  # no estimator always runs right after another
        for name in order:
            f = configs[name]
            sync()
            t0 = time.perf_counter()
            f()
            sync()
            times[name].append(time.perf_counter() - t0)
    true = backprop()
    base = statistics.median(times["backprop"])
    best = min(times["backprop"])
    print(f"ltsf/{args.preset} model={args.model}: {n:,} parameters, batch {batch['x'].shape[0]}, "
          f"device {args.device}, {args.threads} thread(s), median of {args.repeats} interleaved "
          f"repeats (shuffled order); cosine: mean ± sd over {args.draws} draws")
    print(f"{'estimator':<18} {'median ms':>9} {'× backprop':>11} {'min ms':>8} {'× (min)':>8} {'cosine':>16}")
    print(f"{'backprop':<18} {base * 1e3:9.2f} {1.0:11.2f} {best * 1e3:8.2f} {1.0:8.2f} {1.0:16.3f}")
    for name, f in configs.items():
        if name == "backprop":
            continue
        cos = [float(torch.nn.functional.cosine_similarity(f(), true, dim=0)) for _ in range(args.draws)]
        med, low = statistics.median(times[name]), min(times[name])
        sd = statistics.stdev(cos) if len(cos) > 1 else 0.0
        print(f"{name:<18} {med * 1e3:9.2f} {med / base:11.2f} {low * 1e3:8.2f} {low / best:8.2f} "
              f"{statistics.mean(cos):9.4f} ± {sd:.4f}")


if __name__ == "__main__":
    main()
