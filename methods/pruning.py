"""Pruning: train dense, prune (unstructured or structured) to a density, optionally fine-tune.

Unstructured: global magnitude pruning over the Linear/Conv weights (``torch.nn.utils.prune``),
masks kept through fine-tuning and made permanent at the end. Structured: channels removed along
the model's dependency graph with torch-pruning (attention modules registered with their head
count so heads stay consistent). Output projections are never pruned.

Along a schedule (``iterations`` > 1) the density falls geometrically (e.g. 0.8^n) with a share of
fine-tuning after each cut. Each run reports size (parameters, non-zeros), MACs, inference latency
(median of warmed-up single-batch runs) and inference energy per sample, measured in the eval
window so they are not charged to training.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from joulebench.harness.context import TrainContext
from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.registry import register_method
from joulebench.methods.optim import OPTIMIZER_PARAMS, make_optimizer

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def prunable_layers(model: nn.Module, exclude: str) -> dict[str, nn.Module]:
    """Linear/Conv layers except output projections: the last such layer and any whose name
    contains one of the comma-separated ``exclude`` words."""
    words = [w.strip() for w in exclude.split(",") if w.strip()]
    # MultiheadAttention reads its out_proj weight directly, bypassing the Linear's forward and
    # so the pruning mask's hook: such layers are left to structured (head-aware) pruning
    inside_attention = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, PRUNABLE) and id(m) not in inside_attention]
    if layers:
        layers = layers[:-1]
    return {n: m for n, m in layers if not any(w in n for w in words)}


def weight_counts(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting masked weights as they act."""
    total = nonzero = 0
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            base = name[:-5] if name.endswith("_orig") else name
            value = getattr(module, base) if name.endswith("_orig") else param
            total += value.numel()
            nonzero += int(torch.count_nonzero(value))
    return total, nonzero


def count_macs(model: nn.Module, inputs: tuple) -> float:
    """Multiply-accumulates of one forward pass, counted per module from its shapes
    (torch-pruning's counter; attention included).

    Counts dense operations: unstructured zeros still cost MACs on dense kernels, which is the
    point the pruning study makes about unstructured sparsity. (torch's FlopCounterMode was not
    used: after torch-pruning rewires attention, its batched matmuls escape that counter.)
    """
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            macs, _ = tp.utils.count_ops_and_params(model, inputs)
    finally:
        model.train(was_training)
    return float(macs)


def latency(model: nn.Module, inputs: tuple, repeats: int, warmup: int = 5) -> float:
    """Median seconds of one forward pass after warm-up."""
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            model(*inputs)
            if inputs[0].is_cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def prune_unstructured(layers: dict[str, nn.Module], density: float) -> None:
    torch_prune.global_unstructured([(m, "weight") for m in layers.values()],
                                    pruning_method=torch_prune.L1Unstructured, amount=1.0 - density)


def prune_structured(model: nn.Module, example: tuple, layers: dict[str, nn.Module], ratio: float) -> None:
    import torch_pruning as tp

    keep = set(map(id, layers.values()))
    ignored = [m for m in model.modules() if isinstance(m, PRUNABLE) and id(m) not in keep]
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=ratio, ignored_layers=ignored, num_heads=heads)
    pruner.step()


@register_method
class Prune(Method):
    name = "prune"
    description = "Dense training, then unstructured or structured magnitude pruning, optional fine-tuning"
    params = {
        **OPTIMIZER_PARAMS,
        "kind": Param("unstructured", choices=("unstructured", "structured")),
        "density": Param(0.5, low=0.01, high=1.0, help="fraction of prunable weights (or channels) kept"),
        "iterations": Param(1, low=1, high=50, help="cuts along a geometric schedule to the density"),
        "dense_fraction": Param(0.6, low=0.05, high=1.0, help="share of the budget trained dense"),
        "finetune": Param(True, help="fine-tune after each cut with the rest of the budget"),
        "exclude": Param("projection,head,output", help="name parts of layers never pruned"),
        "latency_repeats": Param(30, low=3, high=10_000),
    }

    def train(self, ctx: TrainContext) -> None:
        hp = self.hp
        layers = prunable_layers(ctx.model, hp.exclude)
        if not layers:
            raise RuntimeError(f"{ctx.task.model_name()} has no prunable layer besides its output "
                               "projections; choose a larger model")
        planned = ctx.planned_steps
        if planned is None:
            raise RuntimeError("pruning needs a step or epoch budget to split dense and fine-tune phases")
        dense_steps = max(int(planned * hp.dense_fraction), 1)
        ctx.record(pruned_layers=",".join(layers), kind=hp.kind)
        batches = ctx.batches()
        self._fit(ctx, batches, dense_steps)
        example = self._example(ctx)
        dense_params, _ = weight_counts(ctx.model)
        dense_macs = count_macs(ctx.model, example)
        cut_steps = max((planned - dense_steps) // hp.iterations, 0) if hp.finetune else 0
        for i in range(1, hp.iterations + 1):
            density = hp.density ** (i / hp.iterations)  # geometric: d^(1/n), d^(2/n), ..., d
            if hp.kind == "unstructured":
                prune_unstructured(layers, density)
            else:
                step_ratio = 1.0 - density / (hp.density ** ((i - 1) / hp.iterations))
                prune_structured(ctx.model, example, layers, step_ratio)
                layers = prunable_layers(ctx.model, hp.exclude)
            last = i == hp.iterations and hp.finetune
            self._fit(ctx, batches, planned - ctx.steps if last else cut_steps)
        for module in layers.values():
            if torch_prune.is_pruned(module):
                torch_prune.remove(module, "weight")  # masks become permanent zeros
        self._measure(ctx, example, dense_params, dense_macs)

    def _fit(self, ctx: TrainContext, batches, steps: int) -> None:
        """Train for ``steps`` with a fresh optimizer (shapes change under structured pruning)."""
        if steps <= 0:
            return
        opt = make_optimizer(ctx.model.parameters(), self.hp, ctx.global_batch)
        for done, batch in enumerate(batches, start=1):
            opt.zero_grad(set_to_none=True)
            loss = ctx.loss(ctx.model, batch)
            loss.backward()
            opt.step()  # pruned weights stay zero: the mask is re-applied on every forward
            ctx.step(loss, batch)
            if done >= steps:
                return

    def _example(self, ctx: TrainContext) -> tuple:
        batch = ctx.to_device(next(iter(ctx.train_loader)))
        return tuple(batch[k][:1] for k in ("x", "x_mark", "y_mark") if k in batch) or (batch["x"][:1],)

    def _measure(self, ctx: TrainContext, example: tuple, dense_params: int, dense_macs: float) -> None:
        params, nonzero = weight_counts(ctx.model)
        macs = count_macs(ctx.model, example)
        resume = ctx.clock.current
        ctx.clock.switch("eval")  # inference measurements are not training
        ctx.model.eval()
        _, j0 = ctx.clock.peek("eval")
        seconds = latency(ctx.model, example, self.hp.latency_repeats)
        _, j1 = ctx.clock.peek("eval")
        ctx.model.train()
        ctx.clock.switch(resume)
        runs = self.hp.latency_repeats + 5
        ctx.record(params=params, nonzero=nonzero, density_actual=nonzero / max(params, 1),
                   dense_params=dense_params, param_ratio=params / max(dense_params, 1), macs=macs, dense_macs=dense_macs,
                   latency_ms=seconds * 1e3,
                   inference_j_per_sample=None if j0 is None or j1 is None else (j1 - j0) / runs)
