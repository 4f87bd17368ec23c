"""Forward gradients: the estimators against the true gradient, and runs through the harness."""

from __future__ import annotations

import math

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
from joulebench.methods.forward_gradient import (  # noqa: E402
    Combiner,
    _LinearTaps,
    activity_forward_gradient,
    model_activity_gradient,
    project,
    unsupported_model,
    weight_forward_gradient,
)


def small_problem(dropout: float = 0.0, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(dropout), nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())

    def fn(*ps):
        out = torch.func.functional_call(model, dict(zip(names, ps, strict=False)), (x,))
        return nn.functional.mse_loss(out, y)

    true = torch.cat([g.reshape(-1) for g in torch.autograd.grad(fn(*params), params)])
    return model, x, y, params, fn, true


def flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(nn.functional.cosine_similarity(a, b, dim=0))


def test_projection_with_n_tangents_is_the_true_gradient():
    _, _, _, params, fn, true = small_problem()
    n = true.numel()
    for distribution in ("gaussian", "rademacher"):
        gen = torch.Generator().manual_seed(1)
        loss, est = weight_forward_gradient(fn, params, k=n, combine="projection",
                                            distribution=distribution, generator=gen, scope="global")
        assert torch.allclose(flat(est), true, atol=1e-4, rtol=1e-3), distribution
        assert torch.isclose(loss, fn(*params).detach())
    # fewer tangents than parameters: not the gradient
    _, est = weight_forward_gradient(fn, params, k=n // 2, combine="projection",
                                     generator=torch.Generator().manual_seed(1), scope="global")
    assert cosine(flat(est), true) < 0.99


def test_mean_estimator_is_unbiased():
    _, _, _, params, fn, true = small_problem()
    for distribution in ("gaussian", "rademacher"):
        # the mean over k=4000 tangents is the average of 4000 single-tangent forward gradients
        _, est = weight_forward_gradient(fn, params, k=4000, combine="mean",
                                         distribution=distribution, scope="global",
                                         generator=torch.Generator().manual_seed(2))
        err = (flat(est) - true).norm() / true.norm()
        assert err < 0.15, (distribution, float(err))
        assert cosine(flat(est), true) > 0.98


def test_scaled_projection_is_unbiased_and_plain_projection_shrinks():
    _, _, _, params, fn, true = small_problem()
    n, k, draws = true.numel(), 4, 1500
    gen = torch.Generator().manual_seed(3)
    scaled = torch.zeros_like(true)
    plain = torch.zeros_like(true)
    for _ in range(draws):
        _, est = weight_forward_gradient(fn, params, k=k, combine="projection", generator=gen,
                                         scaling="unbiased", source="backprop", scope="global")
        scaled += flat(est) / draws
        _, est = weight_forward_gradient(fn, params, k=k, combine="projection", generator=gen,
                                         source="backprop", scope="global")
        plain += flat(est) / draws
    assert (scaled - true).norm() / true.norm() < 0.2
    assert torch.allclose(plain.norm() / true.norm(), torch.tensor(k / n), atol=0.05)


def test_cosine_rises_with_k_and_projection_beats_mean():
    _, _, _, params, fn, true = small_problem()
    draws = 150
    result = {}
    for combine in ("mean", "projection"):
        gen = torch.Generator().manual_seed(4)
        for k in (2, 4, 8, 16):
            result[combine, k] = sum(
                cosine(flat(weight_forward_gradient(fn, params, k=k, combine=combine, scope="global",
                                                    generator=gen, source="backprop")[1]), true)
                for _ in range(draws)) / draws
    for combine in ("mean", "projection"):
        values = [result[combine, k] for k in (2, 4, 8, 16)]
        assert values == sorted(values), (combine, values)
    for k in (2, 4, 8, 16):
        assert result["projection", k] > result["mean", k], (k, result)


def test_forward_mode_and_backprop_projected_give_the_same_estimate():
    _, _, _, params, fn, _ = small_problem()
    for combine in ("mean", "projection"):
        for scope in ("tensor", "global"):
            _, fwd = weight_forward_gradient(fn, params, k=5, combine=combine, scope=scope,
                                             generator=torch.Generator().manual_seed(5))
            _, bwd = weight_forward_gradient(fn, params, k=5, combine=combine, source="backprop",
                                             scope=scope, generator=torch.Generator().manual_seed(5))
            assert torch.allclose(flat(fwd), flat(bwd), atol=1e-5), (combine, scope)


def test_dropout_mask_is_the_same_for_every_tangent():
    model, x, y, params, fn, _ = small_problem(dropout=0.5)
    state = torch.get_rng_state()

    def restore():
        torch.set_rng_state(state)

    restore()
    true = flat(torch.autograd.grad(fn(*params), params))
    _, est = weight_forward_gradient(fn, params, k=true.numel(), combine="projection",
                                     generator=torch.Generator().manual_seed(6), before_call=restore,
                                     scope="global")
    assert torch.allclose(flat(est), true, atol=1e-4, rtol=1e-3)


def test_batch_activity_tangent_with_full_span_is_exact_and_mean_is_close():
    """The earlier option (activity_tangent=batch): one tangent over the batch's activations."""
    model, x, y, params, _, true = small_problem()
    taps = _LinearTaps([m for m in model.modules() if isinstance(m, nn.Linear)])
    n_act = 8 * 4 + 8 * 2

    def loss_fn():
        return nn.functional.mse_loss(model(x), y)

    try:
        loss, grads = activity_forward_gradient(loss_fn, taps, k=n_act, combine="projection",
                                                distribution="gaussian", scope="global", tangent="batch",
                                                generator=torch.Generator().manual_seed(7))
        assert torch.allclose(flat(grads[p] for p in params), true, atol=1e-4, rtol=1e-3)
        _, grads = activity_forward_gradient(loss_fn, taps, k=3000, combine="mean",
                                             distribution="gaussian", scope="global", tangent="batch",
                                             generator=torch.Generator().manual_seed(8))
        assert cosine(flat(grads[p] for p in params), true) > 0.97
        _, fwd = activity_forward_gradient(loss_fn, taps, k=3, combine="mean", distribution="gaussian",
                                           generator=torch.Generator().manual_seed(9), scope="global",
                                           tangent="batch")
        _, bwd = activity_forward_gradient(loss_fn, taps, k=3, combine="mean", distribution="gaussian",
                                           generator=torch.Generator().manual_seed(9), source="backprop",
                                           scope="global", tangent="batch")
        assert torch.allclose(flat(fwd[p] for p in params), flat(bwd[p] for p in params), atol=1e-5)
    finally:
        taps.remove()


def test_project_handles_more_tangents_than_dimensions():
    g = torch.tensor([1.0, -2.0, 0.5])
    v = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(project(v, v @ g), g, atol=1e-5)


def test_unsupported_models_are_refused_with_a_reason():
    assert "BatchNorm" in unsupported_model(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), "weight")
    assert unsupported_model(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)), "weight") is None
    why = unsupported_model(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)), "activity")
    assert "nn.Linear" in why and "1.weight" in why
    assert "projection_scope=global" in unsupported_model(nn.Linear(2, 2), "activity", "tensor", "batch")
    assert unsupported_model(nn.Linear(2, 2), "activity", "tensor", "shared") is None


@pytest.fixture
def runner(results):
    return Runner(Store(results), None, store_rows=False)


@pytest.mark.parametrize("params,label", [
    ({"tangents": 2}, "forward-mode"),
    ({"tangents": 2, "combine": "projection", "scaling": "unbiased"}, "forward-mode"),
    ({"tangents": 2, "perturb": "activity", "distribution": "rademacher",
      "projection_scope": "global", "activity_tangent": "batch"}, "forward-mode"),
    ({"tangents": 2, "perturb": "activity"}, "forward-mode"),
    ({"tangents": 2, "combine": "projection", "scaling": "expected_length", "lr": 0.05}, "forward-mode"),
    ({"tangents": 2, "gradient_source": "backprop"}, "backprop-projected"),
])
def test_tiny_harness_runs(runner, params, label):
    spec = resolve(RunSpec(task="ltsf", method="forward_gradient", preset="tiny",
                           method_params=params, budget={"steps": 8}))
    row = runner.run(spec)
    assert row["status"] == "ok", row["error"]
    assert row["x_gradient_source"] == label
    assert row["gradient_updates"] == 8 and row["primary_value"] > 0
    assert row["p_tangents"] == 2


def test_forward_gradient_learns_on_tiny_ltsf(runner):
    def run(method, params):
        spec = resolve(RunSpec(task="ltsf", method=method, preset="tiny", method_params=params,
                               task_params={"model": "mlp"}, budget={"steps": 40}))
        return runner.run(spec)

    untrained = run("forward_gradient", {"lr": 1e-7, "optimizer": "sgd", "momentum": 0.0})
    trained = run("forward_gradient", {"tangents": 4, "combine": "projection", "lr": 0.05})
    assert trained["status"] == "ok", trained["error"]
    assert trained["val_mse"] < untrained["val_mse"]


def test_requires_functional_capability():
    from joulebench.harness.registry import registry

    method = registry().method("forward_gradient")
    assert "functional" in method.requires
    with pytest.raises(SpecError):
        resolve(RunSpec(task="ltsf", method="forward_gradient", method_params={"combine": "median"}))


# -- the paper's estimator (issue 18) ----------------------------------------------------------
def test_per_tensor_projection_is_each_tensors_gradient_at_k_equal_its_size():
    """Per tensor, with its own directional derivatives: k ≥ n_t tangents give the tensor's
    gradient exactly, where one projection over all n parameters would need k = n."""
    _, _, _, params, fn, true = small_problem()
    sizes = [p.numel() for p in params]  # 12, 4, 8, 2
    k = max(sizes)
    for source in ("forward", "backprop"):
        _, est = weight_forward_gradient(fn, params, k=k, combine="projection", source=source,
                                         generator=torch.Generator().manual_seed(11))
        assert torch.allclose(flat(est), true, atol=1e-4, rtol=1e-3), source
    _, est = weight_forward_gradient(fn, params, k=k, combine="projection", scope="global",
                                     generator=torch.Generator().manual_seed(11))
    assert cosine(flat(est), true) < 0.99  # k < n = 26: the global projection is not exact


def test_global_projection_at_small_k_is_a_rescaled_mean_and_per_tensor_is_not():
    """The finding: over n ≈ 4,000 parameters with k = 16, projecting all at once points where
    the mean points (cosine ratio ≈ 1); per tensor the small tensors are recovered exactly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 4))
    x, y = torch.randn(64, 32), torch.randn(64, 4)
    names, params = [n for n, _ in model.named_parameters()], list(model.parameters())

    def fn(*ps):
        return nn.functional.mse_loss(torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (x,)), y)

    true = flat(torch.autograd.grad(fn(*params), params))
    result = {}
    for combine, scope in (("mean", "global"), ("projection", "global"), ("projection", "tensor")):
        gen = torch.Generator().manual_seed(12)
        result[combine, scope] = sum(cosine(flat(weight_forward_gradient(
            fn, params, k=16, combine=combine, scope=scope, generator=gen, source="backprop")[1]), true)
            for _ in range(20)) / 20
    assert abs(result["projection", "global"] / result["mean", "global"] - 1) < 0.05, result
    assert result["projection", "tensor"] > 1.5 * result["projection", "global"], result


def test_expected_length_scaling_gives_unit_expected_length():
    """The paper's correction divides by the expected length of the estimate of a unit-length
    gradient: projection E[χ_k]/E[χ_n]; the earlier ``unbiased`` rule multiplies by n/k."""
    from joulebench.methods.forward_gradient import chi_mean, length_correction

    assert abs(chi_mean(1) - (2 / math.pi) ** 0.5) < 1e-9
    assert abs(length_correction("projection", 4, 400, "expected_length") / 10 - 1) < 0.1  # ≈ √(n/k)
    assert length_correction("projection", 4, 400, "unbiased") == 100
    assert length_correction("projection", 400, 400, "expected_length") == 1
    g = torch.Generator().manual_seed(13)
    grad = torch.randn(300, generator=g)
    grad /= grad.norm()
    for combine in ("projection", "mean"):
        lengths = []
        for _ in range(200):
            comb = Combiner(combine, 4, [300], "expected_length", "global")
            for _ in range(4):
                v = torch.randn(300, generator=g)
                comb.add(v, grad @ v)
            lengths.append(float(comb.result().norm()))
        assert abs(sum(lengths) / len(lengths) - 1) < 0.15, (combine, sum(lengths) / len(lengths))


def test_sgd_is_the_default_optimiser():
    spec = resolve(RunSpec(task="ltsf", method="forward_gradient", preset="tiny"))
    assert spec.method_params["optimizer"] == "sgd" and spec.method_params["momentum"] == 0.0
    assert spec.method_params["projection_scope"] == "tensor"


# -- activity perturbation as in the paper (issue 18) ------------------------------------------
def ltsf_mlp_batch(n_hidden: int = 8, batch: int = 6):
    """The tiny LTSF task's MLP (Linear layers only) and one real training batch."""
    from joulebench.tasks.ltsf.task import LTSF

    spec = resolve(RunSpec(task="ltsf", method="forward_gradient", preset="tiny",
                           task_params={"model": "mlp", "seq_len": 12, "pred_len": 3, "d_ff": n_hidden, "e_layers": 2,
                                        "batch_size": batch, "features": "S"}))
    task = LTSF(spec.task_params, "tiny", 0, torch.device("cpu"))
    task.setup()
    torch.manual_seed(0)
    model = task.build_model()
    data = next(iter(torch.utils.data.DataLoader(task.train_dataset(), batch_size=batch)))
    assert all(isinstance(m, nn.Linear) for m in model.modules() if list(m.parameters(recurse=False)))
    return task, model, data


def per_sample_widths(model: nn.Module, data) -> list[int]:
    """Each Linear's output size for one sample."""
    widths: list[int] = []
    hooks = [m.register_forward_hook(lambda m, a, out: widths.append(out[0].numel()))
             for m in model.modules() if isinstance(m, nn.Linear)]
    model(data["x"])
    for h in hooks:
        h.remove()
    return widths


def activity_estimate(task, model, data, **kw):
    taps = _LinearTaps([m for m in model.modules() if isinstance(m, nn.Linear)])
    shared = kw.get("tangent", "shared") == "shared"
    try:
        loss, grads = activity_forward_gradient(
            (lambda: task.sample_losses(model, data)) if shared else (lambda: task.loss(model, data)),
            taps, distribution="gaussian", **kw)
    finally:
        taps.remove()
    return loss, flat(grads[p] for p in model.parameters())


def test_sample_losses_average_to_the_loss():
    task, model, data = ltsf_mlp_batch()
    losses = task.sample_losses(model, data)
    assert losses.shape == (6,) and torch.isclose(losses.mean(), task.loss(model, data))
    assert "sample_losses" in task.capabilities_for(task.hp)


def test_shared_activity_tangent_is_exact_at_k_equal_to_the_widest_layer_per_sample():
    """The paper's activity perturbation: each layer's tangent has one sample's shape and is
    shared by the whole batch, with one directional derivative per sample. Per layer (scope
    tensor) k = the widest layer's per-sample output (not × batch) spans every sample's output
    gradient, so the weight gradient is exact; one tangent over the whole batch is not, and a
    global projection needs k = the sum over layers."""
    task, model, data = ltsf_mlp_batch()
    true = flat(torch.autograd.grad(task.loss(model, data), list(model.parameters())))
    widths = per_sample_widths(model, data)
    assert len(widths) == 3 and max(widths) < sum(widths) < 6 * max(widths)
    k = max(widths)
    for source in ("forward", "backprop"):
        loss, est = activity_estimate(task, model, data, k=k, combine="projection", scope="tensor",
                                      source=source, generator=torch.Generator().manual_seed(3))
        assert torch.allclose(est, true, atol=1e-5, rtol=1e-3), source
        assert torch.isclose(loss, task.loss(model, data).detach())
    _, est = activity_estimate(task, model, data, k=sum(widths), combine="projection", scope="global",
                               generator=torch.Generator().manual_seed(3))
    assert torch.allclose(est, true, atol=1e-5, rtol=1e-3)
    _, batch_level = activity_estimate(task, model, data, k=k, combine="projection", scope="global",
                                       tangent="batch", generator=torch.Generator().manual_seed(3))
    assert cosine(batch_level, true) < 0.9  # one derivative for the batch: k ≪ batch × width


def test_shared_tangent_forward_mode_equals_its_simulation_and_the_mean_is_unbiased():
    task, model, data = ltsf_mlp_batch()
    true = flat(torch.autograd.grad(task.loss(model, data), list(model.parameters())))
    for scope in ("tensor", "global"):
        same = [activity_estimate(task, model, data, k=3, combine="mean", scope=scope, source=source,
                                  generator=torch.Generator().manual_seed(5))[1]
                for source in ("forward", "backprop")]
        assert torch.allclose(*same, atol=1e-6, rtol=1e-4), scope
    _, many = activity_estimate(task, model, data, k=4000, combine="mean", scope="tensor",
                                source="backprop", generator=torch.Generator().manual_seed(6))
    assert cosine(many, true) > 0.98  # E[v vᵀ] = I: the mean converges to the gradient


def test_every_sample_is_perturbed_along_the_same_tangent():
    from joulebench.methods.forward_gradient import SharedTangents

    tangents = SharedTangents(2, lambda shape: torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    u = tangents(0, torch.Size([5, 3, 4]))
    assert u.shape == (5, 3, 4) and all(torch.equal(u[b], u[0]) for b in range(5))
    tangents.index = 1
    assert not torch.equal(tangents(0, torch.Size([5, 3, 4]))[0], u[0])
    tangents.active = {1}
    assert tangents(0, torch.Size([5, 3, 4])) is None and tangents.sizes == [12]


# -- the seed benchmark's activity-perturbation row (issue 18) -----------------------------------
def seed_benchmark():
    """``benchmarks/seeds/forward_gradient.py`` as a module (it is a script, not a package)."""
    return load_script("benchmarks/seeds/forward_gradient.py")


def test_seed_benchmark_activity_row_is_exact_at_the_widest_layer_and_rises_with_k(capsys):
    bench = seed_benchmark()
    task, model, data = ltsf_mlp_batch()
    true = flat(torch.autograd.grad(task.loss(model, data), list(model.parameters())))
    cos = bench.activity_cosines(task, model, data, true, seed=0, ks=[1, 4], draws=4)
    assert set(cos) == {("activity", c, k) for c in ("mean", "projection") for k in (1, 4, "n_max")}
    assert cos["activity", "projection", "n_max"] > 0.9999  # per layer, k = widest per-sample output
    assert cos["activity", "projection", 1] < cos["activity", "projection", 4] < 0.99
    _, est, widths = model_activity_gradient(model, lambda: task.sample_losses(model, data), k=2,
                                             combine="mean", distribution="gaussian",
                                             generator=torch.Generator().manual_seed(0), scope="tensor")
    assert widths == per_sample_widths(model, data) and set(est) == set(model.parameters())
    bench.print_approximation({0: {**cos, **{(s, c, k): 0.5 for s in ("tensor", "global")
                                            for c in ("mean", "projection") for k in (1, 4, "n_max")}}},
                              [0], [1, 4])
    assert "| activity, per layer | projection | " in capsys.readouterr().out


def test_seed_benchmark_trains_the_activity_perturbation_as_in_the_paper():
    import argparse

    bench = seed_benchmark()
    specs = bench.training_specs(argparse.Namespace(quick=True, seeds=None))
    activity = [s for s in specs if s.method == "forward_gradient" and s.method_params["perturb"] == "activity"]
    assert activity and {(s.method_params["activity_tangent"], s.method_params["projection_scope"])
                         for s in activity} == {("shared", "tensor")}
    assert {s.method_params["combine"] for s in activity} == {"mean", "projection"}


# -- lr ceiling and the seed benchmark's grids (issue 18) -------------------------------------
def test_lr_ceiling_admits_a_projections_rate_at_k1_and_still_refuses_a_typo():
    """A k = 1 projection on an n-element tensor moves ~1/n of the gradient: its best rate on the
    tiny MLP was the old ceiling (10); 1e3 must resolve, 1e5 (a typo for 1e-5) must not."""
    spec = resolve(RunSpec(task="ltsf", preset="tiny", method="forward_gradient",
                           method_params={"combine": "projection", "lr": 1e3}))
    assert spec.method_params["lr"] == 1e3
    with pytest.raises(SpecError, match="outside"):
        resolve(RunSpec(task="ltsf", preset="tiny", method="forward_gradient", method_params={"lr": 1e5}))


def test_seed_benchmark_names_the_rows_whose_best_rate_is_a_grid_edge():
    import json

    import pandas as pd

    bench = seed_benchmark()
    rows = pd.DataFrame([
        {"status": "ok", "method": "forward_gradient", "seed": s, "val_mse": mse,
         "method_params": json.dumps({"combine": "mean", "tangents": 1, "lr": lr})}
        for s in (0, 1) for lr, mse in ((1e-3, 0.9), (1e-2, 0.5), (1e-1, 0.7))] + [
        {"status": "ok", "method": "forward_gradient", "seed": s, "val_mse": mse,
         "method_params": json.dumps({"combine": "projection", "tangents": 1, "lr": lr})}
        for s in (0, 1) for lr, mse in ((1.0, 0.9), (10.0, 0.6))])
    best = bench.best_lr(rows)
    assert best["weight", "mean", 1] == (1e-2, (1e-3, 1e-2, 1e-1))
    assert bench.edge_rows(best) == [("weight", "projection", 1, 10.0, "top")]


def test_seed_benchmark_full_grid_extends_below_the_rows_its_150_steps_put_at_the_bottom():
    """The full mode's 150 steps moved four rows' best rate to their 60-step grid's bottom
    (2026-12-02): in full mode those rows get the next half decade below; quick keeps its grid."""
    import argparse

    bench = load_script("benchmarks/seeds/forward_gradient.py")

    def rates(quick, perturb, combine, k):
        specs = bench.training_specs(argparse.Namespace(quick=quick, seeds=[0]))
        return sorted(s.method_params["lr"] for s in specs if s.method == "forward_gradient"
                      and s.method_params.get("perturb", "weight") == perturb
                      and s.method_params["combine"] == combine and s.method_params["tangents"] == k)

    assert rates(False, "weight", "mean", 1) == [0.0033, 0.01, 0.03, 0.09]
    assert rates(False, "activity", "projection", 16) == [1.1, 3.3, 10.0, 30.0]
    assert rates(False, "weight", "projection", 16) == [3.3, 10.0, 30.0]
    assert rates(True, "weight", "mean", 1) == [0.01, 0.03, 0.09]
