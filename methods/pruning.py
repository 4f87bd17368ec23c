"""Pruning: train dense, prune (unstructured or structured) to a density, optionally fine-tune.

The setup of the pruning study ("pruning Transformer-based time-series forecasting models",
abstract in ``shared/seeds/abstracts.txt``; its code was not found in the reference index, so
this follows the paper's description): several multivariate forecasting models are trained dense,
pruned unstructured (global magnitude over every weight matrix, attention included) or
structured (whole heads and channels removed), evaluated with and without fine-tuning over a
range of sparsities, and compared on error, size, MACs and inference time. Its findings: some
models can be pruned to high sparsity and beat their dense counterpart, fine-tuning is necessary,
and structured pruning gives no significant time saving.

Here:

* **unstructured** (:mod:`prune_masks`): global magnitude over the prunable set (Linear/Conv
  weights and all attention projections, ``nn.MultiheadAttention``'s packed ``in_proj_weight``
  and ``out_proj`` included; the output projection and ``exclude`` layers spared), exactly
  ``round(density × n)`` weights kept; masks re-applied after every optimiser step.
* **structured** (:mod:`prune_structure`): ``density`` of the attention heads and FFN channels
  kept, layers rebuilt smaller (the pruned model runs with fewer MACs).
* Along a schedule (``iterations`` > 1) the density falls geometrically with a share of
  fine-tuning after each cut; ``finetune=False`` is the paper's "without fine-tuning" arm.
* Training and fine-tuning use the shared optimiser parameters, learning-rate ``schedule`` and
  ``warmup_steps`` included (one schedule over the whole budget; each phase's fresh optimiser,
  needed because structured pruning changes shapes, continues the schedule where it stood).

The row states the requested density, the actual density over the prunable set and over all
weights, the prunable share of the weights, parameters, MACs (counted with torch's FLOP
counter: dense kernels, so unstructured zeros still cost MACs), inference latency (median of
warmed-up single-batch runs) and inference energy per sample, measured in the eval window so
they are not charged to training.
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from joulebench.harness.context import TrainContext
from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.registry import register_method
from joulebench.methods.optim import OPTIMIZER_PARAMS, make_optimizer, make_schedule
from joulebench.methods.prune_masks import Masks, exclude_words, prunable_weights, tensor, weight_counts
from joulebench.methods.prune_structure import prune_structured


def count_macs(model: nn.Module, inputs: tuple) -> float:
    """Multiply-accumulates of one forward pass (torch's FLOP counter / 2: matmuls, attention).

    Counted in training mode under ``no_grad`` (in eval mode PyTorch's fused Transformer fast
    path would escape the counter) on the model itself, its mode and buffers (BatchNorm
    statistics) restored afterwards. Not on a copy: snnTorch neurons (PET) keep their last
    membrane state, a non-leaf tensor that ``deepcopy`` refuses.
    """
    was_training = model.training
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    counter = FlopCounterMode(display=False)
    try:
        model.train()
        with torch.no_grad(), counter:
            model(*inputs)
    finally:
        model.train(was_training)
        for name, value in saved.items():  # by assignment: a neuron's state buffer follows the batch shape
            owner, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(owner), leaf, value)
    return counter.get_total_flops() / 2.0


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


@register_method
class Prune(Method):
    name = "prune"
    description = "Dense training, then unstructured or structured magnitude pruning, optional fine-tuning"
    params = {
        **OPTIMIZER_PARAMS,
        "kind": Param("unstructured", choices=("unstructured", "structured")),
        "density": Param(0.5, low=0.01, high=1.0,
                         help="share of prunable weights (unstructured) or of heads and FFN channels kept"),
        "iterations": Param(1, low=1, high=50, help="cuts along a geometric schedule to the density"),
        "dense_fraction": Param(0.6, low=0.05, high=1.0, help="share of the budget trained dense"),
        "finetune": Param(True, help="fine-tune after each cut with the rest of the budget"),
        "exclude": Param("projection,head,output", help="module names (path components) never pruned"),
        "latency_repeats": Param(30, low=3, high=10_000),
    }

    def train(self, ctx: TrainContext) -> None:
        hp = self.hp
        planned = ctx.planned_steps
        if planned is None:
            raise RuntimeError("pruning needs a step or epoch budget to split dense and fine-tune phases")
        targets = prunable_weights(ctx.model, hp.exclude)
        if not targets:
            raise RuntimeError(f"{ctx.task.model_name()} has no prunable weight besides its output "
                               "projection; choose a larger model")
        dense_steps = max(int(planned * hp.dense_fraction), 1)
        ctx.record(kind=hp.kind, density_requested=hp.density,
                   pruned_layers=",".join(targets) if hp.kind == "unstructured" else None)
        batches = ctx.batches()
        self._fit(ctx, batches, dense_steps, None)
        example = self._example(ctx)
        dense_params, _ = weight_counts(ctx.model)
        dense_macs, (dense_latency, _) = count_macs(ctx.model, example), self._latency(ctx, example)
        masks = Masks(targets) if hp.kind == "unstructured" else None
        cut_steps = max((planned - dense_steps) // hp.iterations, 0) if hp.finetune else 0
        kept: dict[str, int] = {}
        for i in range(1, hp.iterations + 1):
            density = hp.density ** (i / hp.iterations)  # geometric: d^(1/n), d^(2/n), ..., d
            if masks is not None:
                masks.prune_to(density)
            else:
                step = density / (hp.density ** ((i - 1) / hp.iterations))
                kept = prune_structured(ctx.model, step, exclude_words(hp.exclude))
            last = i == hp.iterations and hp.finetune
            self._fit(ctx, batches, planned - ctx.steps if last else cut_steps, masks)
        if masks is not None:
            ctx.record(density_prunable=masks.density())
        ctx.record(**kept)
        prunable = sum(tensor(t).numel() for t in targets.values()) if masks is not None else None
        self._measure(ctx, example, prunable, dense_params, dense_macs, dense_latency)

    def _fit(self, ctx: TrainContext, batches, steps: int, masks: Masks | None) -> None:
        """Train for ``steps`` with a fresh optimizer (shapes change under structured pruning),
        the learning-rate schedule continuing from the step the run has reached."""
        if steps <= 0:
            return
        opt = make_optimizer(ctx.model.parameters(), self.hp, ctx.global_batch)
        schedule = make_schedule(opt, self.hp, ctx.planned_steps, ctx.steps_per_epoch)
        if schedule is not None and ctx.steps:
            # resume the schedule (warm-up and decay span the whole budget) before this optimiser
            # has stepped: PyTorch's order warning does not apply to a fast-forward
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                for _ in range(ctx.steps):
                    schedule.step()
        for done, batch in enumerate(batches, start=1):
            opt.zero_grad(set_to_none=True)
            loss = ctx.loss(ctx.model, batch)
            loss.backward()
            if masks is not None:
                masks.mask_grads()
            opt.step()
            if masks is not None:
                masks.apply()  # pruned weights stay zero through fine-tuning
            if schedule is not None:
                schedule.step()
            ctx.step(loss, batch)
            if done >= steps:
                return

    def _example(self, ctx: TrainContext) -> tuple:
        """One sample's forward inputs, as the task names them (MACs and latency are per sample)."""
        batch = ctx.to_device(next(iter(ctx.train_loader)))
        return tuple(t[:1] for t in ctx.task.model_inputs(batch))

    def _latency(self, ctx: TrainContext, example: tuple) -> tuple[float, float | None]:
        """(median seconds, joules per forward) in the eval window: inference is not training."""
        resume = ctx.clock.current
        ctx.clock.switch("eval")
        ctx.model.eval()
        try:
            _, j0 = ctx.clock.peek("eval")
            seconds = latency(ctx.model, example, self.hp.latency_repeats)
            _, j1 = ctx.clock.peek("eval")
        finally:
            ctx.model.train()
            ctx.clock.switch(resume)
        runs = self.hp.latency_repeats + 5
        return seconds, None if j0 is None or j1 is None else (j1 - j0) / runs

    def _measure(self, ctx: TrainContext, example: tuple, prunable: int | None, dense_params: int,
                 dense_macs: float, dense_latency: float) -> None:
        params, nonzero = weight_counts(ctx.model)
        macs = count_macs(ctx.model, example)
        seconds, joules = self._latency(ctx, example)
        ctx.record(params=params, nonzero=nonzero, density_all=nonzero / max(dense_params, 1),
                   prunable_share=None if prunable is None else prunable / max(dense_params, 1),
                   dense_params=dense_params, param_ratio=params / max(dense_params, 1),
                   macs=macs, dense_macs=dense_macs, mac_ratio=macs / max(dense_macs, 1.0),
                   latency_ms=seconds * 1e3, dense_latency_ms=dense_latency * 1e3,
                   latency_ratio=seconds / dense_latency if dense_latency > 0 else None,
                   inference_j_per_sample=joules)
