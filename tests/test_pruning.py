"""Pruning: density as asked, structured models run with fewer MACs, fine-tuning keeps masks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.methods.pruning import count_macs, prunable_layers, prune_structured, prune_unstructured
from joulebench.tasks.ltsf.models import VanillaTransformer


def transformer() -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    model = VanillaTransformer(24, 12, 12, 3, d_model=16, n_heads=2, e_layers=1, d_layers=1, d_ff=32)
    return model, (torch.randn(2, 24, 3), torch.randn(2, 24, 4), torch.randn(2, 24, 4))


def test_unstructured_density_matches_and_output_projection_is_spared() -> None:
    model, _ = transformer()
    layers = prunable_layers(model, "projection")
    assert "projection" not in layers and layers
    prune_unstructured(layers, 0.3)
    kept = sum(int(torch.count_nonzero(m.weight)) for m in layers.values())
    total = sum(m.weight.numel() for m in layers.values())
    assert kept / total == pytest.approx(0.3, abs=0.01)
    assert torch.count_nonzero(model.projection.weight) == model.projection.weight.numel()


def test_structured_pruning_leaves_a_smaller_model_that_runs() -> None:
    model, example = transformer()
    before = count_macs(model, example)
    params_before = sum(p.numel() for p in model.parameters())
    prune_structured(model, example, prunable_layers(model, "projection"), 0.5)
    assert model(*example).shape == (2, 12, 3)
    assert count_macs(model, example) < 0.9 * before
    assert sum(p.numel() for p in model.parameters()) < params_before


def test_finetuning_keeps_masks_and_the_row_reports_size(results: Path) -> None:
    spec = resolve(RunSpec(task="ltsf", method="prune", preset="tiny", budget={"steps": 12},
                           task_params={"model": "transformer", "d_model": 16, "d_ff": 32},
                           method_params={"density": 0.4, "iterations": 2, "latency_repeats": 3}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]
    assert row["gradient_updates"] == 12  # 7 dense, 2 after the first cut, the rest after the last
    assert row["x_macs"] == row["x_dense_macs"]  # unstructured zeros still cost dense MACs
    layers = row["x_pruned_layers"].split(",")
    assert "projection" not in layers and row["x_latency_ms"] > 0
    # the zeros survive fine-tuning: the overall non-zero share is at most the prunable share kept
    assert row["x_nonzero"] < row["x_params"]
    assert row["x_density_actual"] == pytest.approx(row["x_nonzero"] / row["x_params"])
