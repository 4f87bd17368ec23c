"""F³, DFA and DRTP: feedback matrices, local gradients, the per-sample error buffer, harness runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from joulebench.harness.params import SpecError
from joulebench.harness.registry import registry
from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from tests.scripts import load_script

registry()  # load the plugins first: a module imported before the registry would not register
from joulebench.methods.f3 import FEEDBACK_INITS, FeedbackTrainer, feedback_matrix  # noqa: E402


def mlp(seed: int = 0, sizes=(5, 8, 6, 3)) -> nn.Sequential:
    torch.manual_seed(seed)
    blocks = [nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(sizes[:-2], sizes[1:-1], strict=False)]
    blocks.append(nn.Sequential(nn.Linear(sizes[-2], sizes[-1])))
    return nn.Sequential(*blocks)


def ce_loss(model, batch):
    return nn.functional.cross_entropy(model(batch["x"]), batch["y"])


def batch_of(index, seed=0, n=5, classes=3):
    g = torch.Generator().manual_seed(seed)
    index = torch.as_tensor(index)
    return {"index": index, "x": torch.randn(len(index), n, generator=g),
            "y": torch.randint(0, classes, (len(index),), generator=g)}


def grads(model):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


@pytest.mark.parametrize("init", FEEDBACK_INITS)
def test_feedback_matrices(init):
    g = torch.Generator().manual_seed(0)
    b = feedback_matrix(64, 10, init, g)
    assert b.shape == (64, 10) and torch.isfinite(b).all()
    if init == "kaiming_uniform":  # the authors' draw: U(±1/√rows), as nn.Linear with rows inputs
        assert float(b.abs().max()) <= 1 / 8 and float(b.abs().max()) > 0.9 / 8
    elif init != "orthogonal":  # entries of variance ≈ 1/cols
        assert 0.3 < float(b.pow(2).sum(0).mean()) / (64 / 10) < 3
    b2 = feedback_matrix(64, 10, init, torch.Generator().manual_seed(0))
    assert torch.equal(b, b2)  # fixed by the seed
    if init == "orthogonal":
        assert torch.allclose(b.T @ b, torch.eye(10), atol=1e-5)
        wide = feedback_matrix(4, 10, init, g)
        assert torch.allclose(wide @ wide.T, torch.eye(4), atol=1e-5)


def test_last_block_gets_its_true_gradient_and_hidden_blocks_dfa_updates():
    model = mlp()
    batch = batch_of([0, 1, 2, 3])
    # reference: backprop gradients of the last block
    model.zero_grad()
    ce_loss(model, batch).backward()
    reference = grads(model)
    model.zero_grad()
    trainer = FeedbackTrainer(model, "error", seed=3)
    loss = trainer.step(ce_loss, batch)
    got = grads(model)
    assert torch.isclose(loss, ce_loss(model, batch))
    assert torch.allclose(got[-1], reference[-1]) and torch.allclose(got[-2], reference[-2])
    # hidden block 0 by hand: δ = (B0 e) ⊙ relu'(a0), e = ∂loss/∂out per sample
    x = batch["x"]
    a0 = model[0][0](x)
    out = model(x)
    e = (torch.softmax(out, 1) - nn.functional.one_hot(batch["y"], 3)) / len(x)
    delta = (e @ trainer.feedback[0].T) * (a0 > 0)
    assert torch.allclose(got[0], delta.T @ x, atol=1e-6)
    assert torch.allclose(got[1], delta.sum(0), atol=1e-6)
    assert not torch.allclose(got[0], reference[0])  # not backprop
    trainer.remove()
    model.zero_grad()
    ce_loss(model, batch).backward()  # hooks gone: plain backprop again
    assert torch.allclose(grads(model)[0], reference[0])


def test_f3_buffer_holds_each_samples_last_error_and_feeds_it_back():
    model = mlp(1)
    trainer = FeedbackTrainer(model, "delayed_error", seed=0, n_samples=10, first_epoch="zero")
    batch = batch_of([7, 2, 5], seed=1)
    trainer.step(ce_loss, batch)
    assert trainer.buffer.shape == (10, 3) and trainer.seen.tolist() == [i in (2, 5, 7) for i in range(10)]
    with torch.no_grad():
        out = model(batch["x"])
    e = torch.softmax(out, 1) - nn.functional.one_hot(batch["y"], 3)  # per-sample error
    assert torch.allclose(trainer.buffer[[7, 2, 5]], e, atol=1e-6)
    assert trainer.buffer[[0, 1, 3]].abs().sum() == 0
    first = grads(model)
    assert first[0].abs().sum() == 0 and first[2].abs().sum() == 0  # no delayed error yet
    assert first[-2].abs().sum() > 0  # the last block learns from its true gradient at once
    # second visit: hidden blocks are seeded with the stored (delayed) error, not the current one
    stored = trainer.buffer[[7, 2, 5]].clone()
    with torch.no_grad():
        model[-1][0].weight[0].add_(1.0)  # the current error now differs from the stored one
    model.zero_grad()
    trainer.step(ce_loss, batch)
    x = batch["x"]
    a0 = model[0][0](x)
    delta = ((stored / 3) @ trainer.feedback[0].T) * (a0 > 0)
    assert torch.allclose(model[0][0].weight.grad, delta.T @ x, atol=1e-6)
    assert not torch.allclose(trainer.buffer[[7, 2, 5]], stored)  # updated after the batch
    trainer.remove()


def test_first_epoch_current_uses_the_current_error_for_unseen_samples():
    a, b = mlp(2), mlp(2)
    batch = batch_of([0, 1, 2], seed=2)
    FeedbackTrainer(a, "delayed_error", seed=0, n_samples=4, first_epoch="current").step(ce_loss, batch)
    FeedbackTrainer(b, "error", seed=0).step(ce_loss, batch)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=False):
        assert torch.allclose(pa.grad, pb.grad)


def test_drtp_uses_minus_the_one_hot_target():
    model = mlp(3)
    batch = batch_of([0, 1], seed=3)
    trainer = FeedbackTrainer(model, "target", seed=0)
    trainer.step(ce_loss, batch)
    x = batch["x"]
    a0 = model[0][0](x)
    delta = ((-nn.functional.one_hot(batch["y"], 3).float() / 2) @ trainer.feedback[0].T) * (a0 > 0)
    assert torch.allclose(model[0][0].weight.grad, delta.T @ x, atol=1e-6)


def test_non_sequential_model_is_refused():
    with pytest.raises(ValueError, match="nn.Sequential"):
        FeedbackTrainer(nn.Linear(3, 3), "error")
    with pytest.raises(ValueError, match="fewer than two blocks"):
        FeedbackTrainer(nn.Sequential(nn.Linear(3, 3)), "error")
    with pytest.raises(ValueError, match="number of training samples"):
        FeedbackTrainer(mlp(), "delayed_error")


@pytest.mark.parametrize("signal", ["delayed_error", "error", "target"])
def test_feedback_methods_learn_a_classification_problem(signal):
    """Three Gaussian blobs in 5-D, an MLP of three blocks, four epochs of Adam."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, generator=g) * 2.5
    y = torch.randint(0, 3, (384,), generator=g)
    x = centres[y] + torch.randn(384, 5, generator=g)
    model = mlp(4, sizes=(5, 32, 32, 3))
    trainer = FeedbackTrainer(model, signal, seed=0, n_samples=384)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _epoch in range(4):
        order = torch.randperm(384, generator=g)
        for i in range(0, 384, 32):
            idx = order[i:i + 32]
            opt.zero_grad()
            trainer.step(ce_loss, {"index": idx, "x": x[idx], "y": y[idx]})
            opt.step()
    trainer.remove()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    assert accuracy > 0.8, (signal, accuracy)


@pytest.fixture
def runner(results):
    return Runner(Store(results), None, store_rows=False)


@pytest.mark.parametrize("method,params", [
    ("f3", {}), ("f3", {"feedback_init": "orthogonal", "first_epoch": "current"}),
    ("f3", {"first_epoch": "zero", "feedback_structure": "dense", "activation": "task"}),
    ("dfa", {"feedback_init": "gaussian"}), ("drtp", {"feedback_init": "rademacher"}), ("llo", {}),
])
def test_tiny_harness_runs_on_ltsf_mlp(runner, method, params):
    spec = resolve(RunSpec(task="ltsf", method=method, preset="tiny", method_params=params,
                           task_params={"model": "mlp", "e_layers": 2}, budget={"epochs": 2}))
    row = runner.run(spec)
    assert row["status"] == "ok", row["error"]
    assert row["x_blocks"] == 3 and row["gradient_updates"] > 0
    assert 0 < row["primary_value"] < 5


def test_capability_check_refuses_a_model_without_blocks():
    for method in ("f3", "dfa", "drtp", "llo"):
        with pytest.raises(SpecError, match="sequential_blocks"):
            resolve(RunSpec(task="ltsf", method=method, task_params={"model": "dlinear"}))
    assert "sequential_blocks" in registry().task("ltsf").capabilities_for({"model": "mlp"})


# -- the authors' setup (issue 18) -------------------------------------------------------------
def mse_loss(model, batch):
    return nn.functional.mse_loss(model(batch["x"]), batch["y"])


def regression_batch(index, seed=0, n=5, out=3):
    g = torch.Generator().manual_seed(seed)
    index = torch.as_tensor(index)
    return {"index": index, "x": torch.randn(len(index), n, generator=g),
            "y": torch.randn(len(index), out, generator=g)}


def test_f3_buffer_starts_from_the_targets_so_the_first_epoch_is_drtp():
    """The authors fill the buffer with the targets: a sample's first visit seeds the hidden
    blocks like DRTP, on the loss gradient's scale (MSE over D outputs: −2y/D), not with zero."""
    batch = regression_batch([3, 0, 1, 4], seed=5)
    f3_model, drtp_model = mlp(6), mlp(6)
    f3 = FeedbackTrainer(f3_model, "delayed_error", seed=0, n_samples=5)  # default: first_epoch=target
    drtp = FeedbackTrainer(drtp_model, "target", seed=0)
    f3.step(mse_loss, batch)
    drtp.step(mse_loss, batch)
    d = batch["y"].shape[1]
    hidden = [0, 1, 2, 3]  # weight and bias of the two hidden blocks
    for i in hidden:
        got, want = grads(f3_model)[i], grads(drtp_model)[i] * 2 / d
        assert got.abs().sum() > 0 and torch.allclose(got, want, atol=1e-6)
    # the buffer then holds the real errors, on the same scale as the zero-prediction error
    with torch.no_grad():
        e = 2 * (f3_model(batch["x"]) - batch["y"]) / d
    assert torch.allclose(f3.buffer[batch["index"]], e, atol=1e-6)
    f3.remove()
    drtp.remove()


def test_zero_prediction_error_of_cross_entropy_is_uniform_minus_one_hot():
    trainer = FeedbackTrainer(mlp(7), "delayed_error", seed=0, n_samples=3)
    batch = batch_of([0, 1, 2], seed=7)
    got = trainer.zero_prediction_error(ce_loss, batch)
    want = torch.full((3, 3), 1 / 3) - nn.functional.one_hot(batch["y"], 3)
    assert torch.allclose(got, want, atol=1e-6)
    trainer.remove()


def ltsf_mlp(activation="relu", channels=3, seq_len=12, pred_len=4, d_ff=8, e_layers=2):
    from joulebench.tasks.ltsf.zoo import MODELS

    torch.manual_seed(0)
    return MODELS["mlp"]({"seq_len": seq_len, "pred_len": pred_len, "d_ff": d_ff,
                          "e_layers": e_layers, "activation": activation}, channels)


def test_ltsf_mlp_activation_is_a_task_parameter():
    assert any(isinstance(m, nn.Tanh) for m in ltsf_mlp("tanh").modules())
    assert not any(isinstance(m, nn.Tanh) for m in ltsf_mlp("relu").modules())
    assert registry().task("ltsf").params["activation"].default == "relu"  # backprop's numbers kept


def test_feedback_per_channel_maps_each_channels_error_onto_its_own_units():
    """The LTSF MLP is channel-independent: one (d_ff × pred_len) matrix per hidden block, and
    channel c's hidden units are seeded by channel c's error only."""
    model = ltsf_mlp(channels=3)
    trainer = FeedbackTrainer(model, "error", seed=0, axes=model.independent_axes)
    x, y = torch.randn(2, 12, 3), torch.randn(2, 4, 3)
    trainer.step(lambda m, b: nn.functional.mse_loss(m(b["x"]), b["y"]), {"x": x, "y": y})
    assert [tuple(fb.shape) for fb in trainer.feedback] == [(8, 4), (8, 4)]
    signal = torch.zeros(2, 4, 3)
    signal[:, :, 1] = torch.randn(2, 4)
    with torch.no_grad():
        outputs = [model[0](x)]
        outputs += [model[1](outputs[0]), model[2](model[1](outputs[0]))]
    seeds = trainer.seeds(signal.reshape(2, -1), outputs)
    for seed, fb in zip(seeds, trainer.feedback, strict=True):  # hidden: (batch, channel, d_ff)
        assert seed.shape == (2, 3, 8)
        assert seed[:, 1].abs().sum() > 0 and seed[:, [0, 2]].abs().sum() == 0
        assert torch.allclose(seed[:, 1], signal[:, :, 1] @ fb.T / 2)
    dense = FeedbackTrainer(ltsf_mlp(channels=3), "error", seed=0)
    dense.step(lambda m, b: nn.functional.mse_loss(m(b["x"]), b["y"]), {"x": x, "y": y})
    assert [tuple(fb.shape) for fb in dense.feedback] == [(24, 12), (24, 12)]
    trainer.remove()
    dense.remove()


def test_llo_trains_only_the_last_block():
    model = mlp(8)
    batch = batch_of([0, 1, 2, 3], seed=8)
    model.zero_grad()
    ce_loss(model, batch).backward()
    reference = grads(model)
    model.zero_grad()
    trainer = FeedbackTrainer(model, "none", seed=0)
    trainer.step(ce_loss, batch)
    assert all(p.grad is None for b in list(model)[:-1] for p in b.parameters())
    assert torch.allclose(model[-1][0].weight.grad, reference[-2])
    trainer.remove()


def test_feedback_methods_run_the_papers_tanh_network_by_default(runner):
    spec = resolve(RunSpec(task="ltsf", method="f3", preset="tiny", budget={"steps": 3},
                           task_params={"model": "mlp", "e_layers": 2}))
    row = runner.run(spec)
    assert row["status"] == "ok", row["error"]
    assert row["x_hidden_activation"] == "tanh" and row["x_activations_replaced"] == 2
    assert row["x_feedback_structure"] == "per_channel"
    spec = resolve(RunSpec(task="ltsf", method="dfa", preset="tiny", budget={"steps": 3},
                           method_params={"activation": "task"},
                           task_params={"model": "mlp", "e_layers": 2}))
    row = runner.run(spec)
    assert row["x_hidden_activation"] == "task" and row["x_activations_replaced"] == 0


def test_the_classification_setting_is_a_fully_connected_tanh_network_of_blocks(runner):
    """The paper's classification network on a task generated here: imagenet ``model=mlp``."""
    from joulebench.tasks.imagenet.models import mlp_classifier

    model = mlp_classifier(4, 16, hidden=32, layers=2)
    assert [type(b[-1]) for b in model] == [nn.Tanh, nn.Tanh, nn.Linear]
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 4)
    params = {"model": "mlp", "image_size": 16, "hidden": 32, "batch_size": 50}
    spec = resolve(RunSpec(task="imagenet", preset="tiny", method="f3", task_params=params,
                           budget={"steps": 6}))
    assert not {"width", "stages", "blocks", "norm"} & set(spec.task_params)  # the ResNet's own
    with pytest.raises(SpecError, match="'width' applies only when model in"):
        resolve(RunSpec(task="imagenet", preset="tiny", method="f3", task_params={**params, "width": 8}))
    row = runner.run(spec)
    assert row["status"] == "ok", row["error"]
    assert row["model"] == "mlp2x32" and row["x_blocks"] == 3 and 0.0 <= row["primary_value"] <= 1.0


# -- the seed benchmark (issue 18) ------------------------------------------------------------
def seed_benchmark():
    """``benchmarks/seeds/f3.py`` as a module (it is a script, not a package)."""
    return load_script("benchmarks/seeds/f3.py")


def test_seed_benchmark_full_mode_trains_inside_the_papers_epochs():
    import argparse

    bench = seed_benchmark()
    full = bench.build_specs(argparse.Namespace(quick=False, seeds=[0]), "regression")
    cls = bench.build_specs(argparse.Namespace(quick=False, seeds=[0]), "classification")
    assert {s.budget.epochs for s in full} == {200} and {s.budget.epochs for s in cls} == {100}
    assert {s.task_params["gen_val_per_class"] for s in cls} == {50}  # 200 test images
    quick = bench.build_specs(argparse.Namespace(quick=True, seeds=[0]), "classification")
    assert {s.task_params["gen_val_per_class"] for s in quick} == {15}  # the tiny preset's


def test_seed_benchmark_scores_a_diverged_rate_worst_and_names_edge_rates():
    import json

    import pandas as pd

    bench = seed_benchmark()

    def row(method, lr, seed, val, status="ok", error=""):
        return {"method": method, "seed": seed, "status": status, "error": error, "val_mse": val,
                "metric_mse": val, "method_params": json.dumps({"lr": lr})}

    rows = pd.DataFrame([row("backprop", 1e-4, s, 0.5) for s in (0, 1)]
                        + [row("backprop", 3e-4, s, 0.3) for s in (0, 1)]
                        + [row("backprop", 1e-3, s, None, "diverged") for s in (0, 1)]
                        + [row("f3", 1e-4, s, 0.6) for s in (0, 1)]
                        + [row("f3", 1e-3, s, 0.4) for s in (0, 1)]
                        + [row("f3", 3e-3, s, None, "failed", "TimeoutError") for s in (0, 1)])
    best = bench.best_lrs(rows, "regression")
    assert best["backprop"] == (3e-4, (1e-4, 3e-4, 1e-3))  # the diverged top holds it inside
    assert best["f3"] == (1e-3, (1e-4, 1e-3))  # a crash says nothing about its rate
    assert bench.edge_lines(best) == ["lr at grid edge: f3 best lr 0.001 is the grid's top"]
    assert bench.best_per_method(rows, "regression")["backprop"].to_dict() == {0: 0.3, 1: 0.3}


def test_seed_benchmark_reads_convergence_from_the_stored_curve(tmp_path):
    import argparse

    bench = seed_benchmark()
    spec = bench.build_specs(argparse.Namespace(quick=True, seeds=[0]), "regression")[2]
    assert spec.method == "f3"
    spec = resolve(RunSpec(task=spec.task, preset=spec.preset, method="f3", seed=0,
                           task_params=spec.task_params, method_params={"lr": spec.method_params["lr"]},
                           budget={"epochs": 4}))
    row = Runner(Store(tmp_path), None).run(spec)
    assert row["status"] == "ok", row["error"]
    rows = bench.common.stored_rows(tmp_path, [spec])
    errors = bench.curve_errors(tmp_path, rows, "regression", 4)
    assert list(errors) == ["f3"] and len(errors["f3"]) == len(bench.CHECKPOINTS)
    assert errors["f3"][-1] == pytest.approx(row["val_mse"])
    table = bench.convergence_table(errors, 4)
    assert "| f3 | " in table and "epoch 3 |" in table and "%" in table.splitlines()[-1]


def test_seed_benchmark_reports_a_store_without_its_rows(tmp_path):
    """``--table-only`` on a store holding none of the specs' run keys (another code version's)
    prints an empty report, it does not crash reading the curves of no runs."""
    import pandas as pd

    bench = seed_benchmark()
    rows = pd.DataFrame(columns=["method", "seed", "status", "error", "val_mse", "metric_mse", "method_params"])
    assert bench.curve_errors(tmp_path, rows, "regression", 4) == {}
    assert bench.best_lrs(rows, "regression") == {} and bench.best_per_method(rows, "regression") == {}


def test_seed_benchmark_full_grid_extends_upwards_only_for_the_methods_at_its_top():
    """The 100-epoch classification put DRTP and LLO at the common grid's top (3e-3), the
    200-epoch regression LLO: their grid goes on upwards, the others' stops where their best was
    interior (a grid per method and setting)."""
    import argparse

    bench = seed_benchmark()
    specs = bench.build_specs(argparse.Namespace(quick=False, seeds=[0]), "classification")
    rates = {m: sorted(s.method_params["lr"] for s in specs if s.method == m) for m in bench.METHODS}
    assert rates["drtp"] == rates["llo"] == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    assert rates["backprop"] == rates["f3"] == rates["dfa"] == [1e-4, 3e-4, 1e-3, 3e-3]
    quick = bench.build_specs(argparse.Namespace(quick=True, seeds=[0]), "classification")
    assert {s.method_params["lr"] for s in quick if s.method == "drtp"} == {3e-4, 3e-3}
    reg = bench.build_specs(argparse.Namespace(quick=False, seeds=[0]), "regression")
    assert {s.method_params["lr"] for s in reg if s.method == "llo"} == {1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2}
    assert {s.method_params["lr"] for s in reg if s.method == "drtp"} == {1e-4, 3e-4, 1e-3, 3e-3}


def test_gap_closed_is_undefined_where_the_baseline_does_not_trail_backprop():
    """LLO matched or beat backprop on the 200-epoch regression: (E_b − E_F³)/(E_b − E_BP) then
    divides by ~0 or flips sign (it read 17.7 there), so that seed has no gap to close (NaN)
    and is named, rather than scoring F³ as closing 1770 % of it."""
    import math

    import pandas as pd

    bench = seed_benchmark()
    best = {"backprop": pd.Series({0: 0.040, 1: 0.040}), "f3": pd.Series({0: 0.06, 1: 0.05}),
            "llo": pd.Series({0: 0.037, 1: 0.080})}
    gaps = bench.gap_closed(best, "f3", "llo")
    assert math.isnan(gaps[0]) and gaps[1] == pytest.approx(0.75)
    assert bench.undefined_gap_line(best, "llo") == (
        "gap vs llo undefined on seed 0: llo's test error is not above backprop's")
    assert bench.undefined_gap_line(best, "f3") is None
