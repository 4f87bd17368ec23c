"""AB-training: factors, group training and sync modes, byte counts, simulated and real ranks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from joulebench.cluster.local import run_parallel
from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.methods.ab_training import (
    ABRun,
    ABTraining,
    Replica,
    SimulatedComm,
    decompose,
    groups_problem,
    lr_factor,
    rank_cap,
    sync,
    team_of,
)
from joulebench.methods.lowrank import weight_slots

TASK = {"model": "transformer", "d_model": 16, "d_ff": 32}
AB = {"ab_steps": 6, "full_steps": 2, "warmup_fraction": 0.2}


def run_with_replicas(world: int, mode: str, group_size: int = 1, **hp) -> ABRun:
    """An AB run wired to ``world`` simulated replicas of a rank-3 two-layer model."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 12), nn.Tanh(), nn.Linear(12, 10))
    with torch.no_grad():
        for layer in (model[0], model[2]):  # rank 3, so the factors hold the weight exactly
            out, inp = layer.weight.shape
            layer.weight.copy_(torch.randn(out, 3) @ torch.randn(3, inp))
    method = ABTraining({**{k: p.default for k, p in ABTraining.params.items()},
                         "sync_mode": mode, "min_rank": 1, "sv_cutoff": 1e-4,
                         "group_size": group_size, **hp})
    models = [model] + [copy.deepcopy(model) for _ in range(world - 1)]
    replicas = [Replica(r, m, weight_slots(m)) for r, m in enumerate(models)]
    return ABRun(method.hp, world, SimulatedComm(world, group_size), replicas, 1e-3, 100, 10)


def test_decomposition_keeps_the_function_and_groups_train_one_factor_each() -> None:
    run = run_with_replicas(2, "learned")
    x = torch.randn(5, 10)
    before = run.replicas[0].model(x).detach()
    decompose(run)
    assert run.stats["ranks"] == {"0.weight": 3, "2.weight": 3}
    torch.testing.assert_close(run.replicas[0].model(x), before, atol=1e-5, rtol=1e-5)
    a_team, b_team = (r.model for r in run.replicas)
    assert a_team[0].weight_lowrank.a.requires_grad and not a_team[0].weight_lowrank.b.requires_grad
    assert b_team[0].weight_lowrank.b.requires_grad and not b_team[0].weight_lowrank.a.requires_grad
    assert rank_cap(12, 10) == 5  # (12 + 10) · 5 <= 120 parameters


@pytest.mark.parametrize("mode", ["learned", "learned_world", "both", "product"])
def test_sync_modes_combine_the_replicas_as_documented(mode: str) -> None:
    run = run_with_replicas(2, mode)
    decompose(run)
    with torch.no_grad():  # each group moves its own factor
        for replica in run.replicas:
            f = replica.model[2].weight_lowrank
            (f.a if replica.rank == 0 else f.b).add_(0.1 * (replica.rank + 1))
    f0, f1 = (r.model[2].weight_lowrank for r in run.replicas)
    a0, b0, a1, b1 = (t.detach().clone() for t in (f0.a, f0.b, f1.a, f1.b))
    expected = {"learned": a0 @ b1, "learned_world": a0 @ b1, "both": (a0 + a1) / 2 @ ((b0 + b1) / 2),
                "product": (a0 @ b0 + a1 @ b1) / 2}[mode]
    sync(run)
    for replica in run.replicas:
        weight = replica.model[2].weight
        assert isinstance(weight, nn.Parameter) and weight.requires_grad
        torch.testing.assert_close(weight, expected, atol=1e-5, rtol=1e-5)
    sent = run.comm.traffic.payload["sync"]
    one_rank = 4 * (a0.numel() + b0.numel() + 12 * 3 + 3 * 10)  # float32 A and B, 2 layers
    biases = 2 * 4 * (12 + 10)
    # learned: A broadcast from the A rank to both, B likewise (groups of one reduce nothing);
    # learned_world and both: A and B all-reduced over both ranks; product: the dense products
    assert sent == {"learned": 2 * one_rank + biases, "learned_world": 2 * one_rank + biases,
                    "both": 2 * one_rank + biases, "product": 2 * 4 * (120 + 120) + biases}[mode]
    ring = run.comm.traffic.ring["sync"]
    if mode == "learned":  # a broadcast moves each byte once, an all-reduce twice (ring)
        assert ring == pytest.approx(one_rank + biases)


def test_group_sizes_split_the_ranks_into_independent_groups() -> None:
    comm = SimulatedComm(8, 2)
    assert comm.members(3, "group") == [2, 3]
    assert comm.members(3, "team") == [2, 3, 6, 7] and comm.members(0, "team") == [0, 1, 4, 5]
    assert [team_of(r, 2) for r in range(8)] == [0, 0, 1, 1, 0, 0, 1, 1]
    assert comm.members(5, "world") == list(range(8))
    assert groups_problem(8, 2) is None and groups_problem(8, 1) is None
    assert "does not divide" in groups_problem(6, 4) and "one group" in groups_problem(4, 4)


def test_learned_sync_averages_each_factor_over_the_ranks_that_trained_it() -> None:
    run = run_with_replicas(4, "learned", group_size=1)
    decompose(run)
    with torch.no_grad():
        for replica in run.replicas:
            f = replica.model[2].weight_lowrank
            (f.a if team_of(replica.rank, 1) == 0 else f.b).add_(0.1 * (replica.rank + 1))
    fs = [r.model[2].weight_lowrank for r in run.replicas]
    a = (fs[0].a + fs[2].a).detach() / 2  # ranks 0 and 2 trained A
    b = (fs[1].b + fs[3].b).detach() / 2
    sync(run)
    for replica in run.replicas:
        torch.testing.assert_close(replica.model[2].weight, a @ b, atol=1e-5, rtol=1e-5)


def test_halve_per_epoch_is_applied() -> None:
    run = run_with_replicas(2, "learned", schedule="halve_per_epoch", warmup_steps=0)
    assert lr_factor(run, 0, None) == 1.0 and lr_factor(run, 10, None) == 0.5  # 10 local steps/epoch
    assert lr_factor(run, 25, None) == 0.25


def test_simulated_run_counts_bytes_against_ddp(results: Path) -> None:
    spec = resolve(RunSpec(task="ltsf", method="ab_training", preset="tiny", budget={"steps": 20},
                           task_params=TASK, method_params={**AB, "simulate_ranks": 2}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]
    assert row["x_group_size"] == 1 and row["x_groups"] == 2
    assert row["samples"] == 2 * 20 * 32 and row["x_simulated"] and row["x_ranks_total"] == 2
    by_kind = json.loads(row["x_ab_bytes_by_kind"])
    dense = 4 * row["x_dense_trainable_params"]
    # full-rank steps 0-3 (warm-up), AB 4-9, sync, full 10-11, AB 12-17, sync, full 18-19;
    # groups of one rank all-reduce nothing; DDP all-reduces every gradient at every step
    assert by_kind["full"] == 2 * 8 * dense and "group" not in by_kind
    assert row["x_ddp_allreduce_bytes"] == 2 * 20 * dense
    assert row["x_ab_bytes_ratio"] == pytest.approx(row["x_ab_allreduce_bytes"] / row["x_ddp_allreduce_bytes"])
    assert row["x_ab_bytes_ratio"] < 1 and row["x_ab_phases"] == 2
    assert row["x_trainable_params"] < row["x_dense_trainable_params"]
    history = json.loads(row["x_trainable_history"])  # [step, trainable per rank] at each switch
    assert [s for s, _ in history] == [0, 4, 10, 12, 18]
    assert history[1][1] == row["x_trainable_params"] and history[2][1] == row["x_dense_trainable_params"]


def test_one_rank_without_simulation_is_refused(results: Path) -> None:
    spec = resolve(RunSpec(task="ltsf", method="ab_training", preset="tiny", budget={"steps": 4},
                           task_params=TASK))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "failed" and "at least two ranks" in row["error"]


def test_two_real_ranks_match_the_simulated_byte_counts(results: Path) -> None:
    common = dict(task="ltsf", method="ab_training", preset="tiny", budget={"steps": 20}, task_params=TASK)
    real = resolve(RunSpec(**common, world_size=2, method_params=AB))
    summary = run_parallel(real, results, "torchrun")
    assert summary["status"] == "ok", summary
    row = Store(results).execute("SELECT * FROM runs WHERE run_key = ?", [real.run_key]).df().iloc[0]
    sim = Runner(Store(results)).run(resolve(RunSpec(**common, method_params={**AB, "simulate_ranks": 2})))
    assert row["x_param_spread_over_ranks"] == 0.0  # every rank ends with the same model
    assert not row["x_simulated"] and row["world_size"] == 2
    for key in ("x_ab_allreduce_bytes", "x_ddp_allreduce_bytes", "x_allreduce_calls", "x_ab_bytes_by_kind"):
        assert row[key] == sim[key], key


def test_four_simulated_ranks_in_groups_of_two_reduce_inside_the_group(results: Path) -> None:
    spec = resolve(RunSpec(task="ltsf", method="ab_training", preset="tiny", budget={"steps": 12},
                           task_params=TASK,
                           method_params={**AB, "simulate_ranks": 4, "group_size": 2}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]
    assert row["x_groups"] == 2 and json.loads(row["x_ab_bytes_by_kind"])["group"] > 0
    bad = resolve(RunSpec(task="ltsf", method="ab_training", preset="tiny", budget={"steps": 4},
                          task_params=TASK, method_params={"simulate_ranks": 4, "group_size": 3}))
    row = Runner(Store(results)).run(bad)
    assert row["status"] == "failed" and "does not divide" in row["error"]
