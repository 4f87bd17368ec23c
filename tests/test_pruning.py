"""Pruning: density exact over the prunable set (attention included), heads removed by structured
pruning and the pruned models run, masks kept through fine-tuning, the schedule read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.methods.prune_masks import Masks, prunable_weights, tensor
from joulebench.methods.prune_structure import HeadSubsetAttention, prune_structured
from joulebench.methods.pruning import count_macs
from joulebench.tasks.ltsf.models import VanillaTransformer
from joulebench.tasks.ltsf.patchtst import PatchTST


def transformer(heads: int = 2) -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    model = VanillaTransformer(24, 12, 12, 3, d_model=16, n_heads=heads, e_layers=1, d_layers=1, d_ff=32)
    return model, (torch.randn(2, 24, 3), torch.randn(2, 24, 4), torch.randn(2, 24, 4))


def test_unstructured_density_is_exact_over_the_prunable_set_attention_included() -> None:
    model, example = transformer()
    targets = prunable_weights(model, "")
    attention = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(attention) == 3  # encoder self, decoder self, decoder cross
    for mha in attention:
        assert (mha, "in_proj_weight") in targets.values() and (mha.out_proj, "weight") in targets.values()
    assert (model.projection, "weight") not in targets.values()
    masks = Masks(targets)
    masks.prune_to(0.1)
    n = sum(tensor(t).numel() for t in targets.values())
    assert masks.density() == round(0.1 * n) / n
    for mha in attention:  # attention really is pruned, and the pruned weights act
        assert torch.count_nonzero(mha.in_proj_weight) < 0.5 * mha.in_proj_weight.numel()
    assert torch.count_nonzero(model.projection.weight) == model.projection.weight.numel()
    assert model(*example).shape == (2, 12, 3)


def test_structured_pruning_removes_heads_and_the_model_runs_with_fewer_macs() -> None:
    model, example = transformer(heads=4)
    before, params = count_macs(model, example), sum(p.numel() for p in model.parameters())
    kept = prune_structured(model, 0.5, ["projection"])
    attention = [m for m in model.modules() if isinstance(m, HeadSubsetAttention)]
    assert len(attention) == 3 and all(m.num_heads == 2 for m in attention)
    assert kept["heads_kept"] == 6 and kept["ffn_channels_kept"] == 2 * 16
    assert model(*example).shape == (2, 12, 3)
    model.eval()
    with torch.no_grad():
        assert model(*example).shape == (2, 12, 3)  # eval: no fused fast path trips over it
    assert count_macs(model, example) < 0.8 * before
    assert sum(p.numel() for p in model.parameters()) < params


def test_patchtst_keeps_the_same_heads_in_every_layer_so_scores_still_add_up() -> None:
    torch.manual_seed(0)
    model = PatchTST(24, 12, 3, patch_len=8, stride=4, d_model=16, n_heads=4, e_layers=2, d_ff=32)
    example = (torch.randn(4, 24, 3),)
    kept = prune_structured(model, 0.5, ["head"])
    assert [layer.attn.n_heads for layer in model.layers] == [2, 2]
    assert kept["heads_kept"] == 2
    assert model(*example).shape == (4, 12, 3)


def run(results: Path, **method_params) -> dict:
    spec = resolve(RunSpec(task="ltsf", method="prune", preset="tiny", budget={"steps": 12},
                           task_params={"model": "transformer", "d_model": 16, "d_ff": 32},
                           method_params={"latency_repeats": 3, **method_params}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["traceback"]
    return row


def test_finetuning_keeps_masks_and_the_row_states_both_densities(results: Path) -> None:
    row = run(results, density=0.1, iterations=2)
    assert row["gradient_updates"] == 12  # 7 dense, 2 after the first cut, the rest after the last
    assert row["x_density_requested"] == 0.1
    assert row["x_density_prunable"] == pytest.approx(0.1, abs=1e-3)  # after fine-tuning
    assert row["x_density_prunable"] < row["x_density_all"] < 1.0
    assert 0.5 < row["x_prunable_share"] < 1.0
    pruned = row["x_pruned_layers"].split(",")
    assert "transformer.decoder.layers.0.multihead_attn.in_proj_weight" in pruned  # not "head"
    assert "transformer.encoder.layers.0.self_attn.out_proj.weight" in pruned
    assert "projection.weight" not in pruned
    assert row["x_macs"] == row["x_dense_macs"]  # unstructured zeros still cost dense MACs
    assert row["x_latency_ms"] > 0 and row["x_latency_ratio"] > 0


def test_structured_run_reports_mac_and_latency_ratios(results: Path) -> None:
    row = run(results, kind="structured", density=0.5)
    assert row["x_mac_ratio"] < 0.9 and row["x_param_ratio"] < 1.0
    assert row["x_heads_kept"] == 3 * 2 and row["x_latency_ratio"] > 0  # 3 attentions, 2 of 4 heads each


def test_schedule_and_warmup_are_applied(results: Path) -> None:
    plain = run(results, density=0.5)
    warm = run(results, density=0.5, warmup_steps=12, schedule="cosine")
    assert warm["primary_value"] != plain["primary_value"]


@pytest.mark.parametrize("task", ["pet", "imagenet", "era5", "load"])
def test_pruning_measures_macs_on_every_task_it_serves(results: Path, task: str) -> None:
    # the MAC and latency example is the task's own forward input: PET's batch has no "x"
    # (its model reads "hits"), and pruning guessed the keys (KeyError: 'x' on cpu-v1's pet-petnet)
    spec = resolve(RunSpec(task=task, method="prune", preset="tiny", budget={"steps": 6},
                           method_params={"latency_repeats": 3}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["traceback"]
    assert row["x_dense_macs"] > 0 and row["x_latency_ms"] > 0
