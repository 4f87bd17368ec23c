"""OIALR: exact at full rank, rank cuts within the singular-value bound, optimizer state follows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.methods.lowrank import USV, RankCut, authors_rank, svd, truncation_rank, weight_slots
from joulebench.methods.oialr import BasisTracker, Schedule, convert, full_rank_kept, rediagonalise


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 12, kernel_size=3, padding=1)
        self.attn = nn.MultiheadAttention(12, 2, batch_first=True)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).transpose(1, 2)
        h, _ = self.attn(h, h, h)
        return self.fc(h)


def test_full_rank_conversion_reproduces_the_dense_model() -> None:
    torch.manual_seed(0)
    model, x = Small(), torch.randn(4, 3, 7)
    before = model(x).detach()
    slots = weight_slots(model, min_dim=2)
    assert [s.name for s in slots] == ["conv.weight", "attn.in_proj_weight", "attn.out_proj.weight", "fc.weight"]
    for slot in reversed(slots):
        convert(model, slot, None, RankCut("max_cut", 0.0, 10_000, 0.0))
    assert all(isinstance(s.factor(), USV) for s in slots)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "fc.weight_lowrank.sigma" in trainable and "fc.weight" not in trainable
    assert "attn.out_proj.weight_lowrank.sigma" in trainable  # MHA reads it without calling out_proj
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    model.eval()  # the eval fast path of attention reads the recomposed weights too
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


def test_rank_cut_stays_within_the_discarded_singular_value() -> None:
    torch.manual_seed(1)
    layer = nn.Linear(20, 16)
    with torch.no_grad():  # a spread spectrum, so a cut at 0.2 × the largest removes something
        u, _, v = svd(layer.weight)
        layer.weight.copy_(u @ torch.diag(torch.logspace(0, -2, 16)) @ v.T)
    model = nn.Sequential(layer)
    dense = layer.weight.detach().clone()
    _, s, _ = svd(dense)
    x = torch.randn(64, 20)
    y = model(x).detach()
    r = convert(model, weight_slots(model)[0], None, RankCut("max_cut", 0.2, 1, 1.0))
    assert r == int((s >= 0.2 * s[0]).sum()) and r < 16
    err = (model(x) - y).norm(dim=1)
    assert torch.all(err <= s[r] * x.norm(dim=1) + 1e-5)  # ||(W - W_r) x|| <= σ_{r+1} ||x||


def test_rediagonalised_cut_stays_within_the_bound_and_respects_floor_and_max_cut() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(16, 16))
    slot = weight_slots(model)[0]
    convert(model, slot, None, RankCut("max_cut", 0.0, 16, 0.0))
    with torch.no_grad():  # a trained Σ is no longer diagonal
        q1, _ = torch.linalg.qr(torch.randn(16, 16))
        q2, _ = torch.linalg.qr(torch.randn(16, 16))
        slot.factor().sigma.copy_(q1 @ torch.diag(torch.logspace(0, -3, 16)) @ q2.T)
    d = torch.linalg.svdvals(slot.factor().sigma.detach())
    x = torch.randn(32, 16)
    y = model(x).detach()
    r = rediagonalise(slot, None, RankCut("max_cut", 0.05, 2, 0.25))
    assert r == 12  # the cut would keep 7, but at most a quarter of 16 may go per check
    sigma = slot.factor().sigma.detach()
    assert torch.allclose(sigma, torch.diag(torch.diagonal(sigma)), atol=1e-6)
    assert torch.all((model(x) - y).norm(dim=1) <= d[r] * x.norm(dim=1) + 1e-5)
    assert rediagonalise(slot, None, RankCut("max_cut", 0.99, 5, 1.0)) == 5  # the floor holds
    assert truncation_rank(torch.tensor([4.0, 2.0, 1.0, 0.1]), 0.2, 1) == 3


def test_optimizer_state_follows_the_rank() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(16, 12)

    def step() -> None:
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()

    step()
    slot = weight_slots(model)[-1]
    dense = model[2].weight
    r = convert(model, slot, opt, RankCut("max_cut", 0.0, 100, 0.0))
    sigma = slot.factor().sigma
    assert r == 8 and dense not in opt.state and sigma in opt.state
    assert opt.state[sigma]["exp_avg"].shape == (8, 8) and opt.state[sigma]["exp_avg_sq"].min() >= 0
    assert any(p is sigma for p in opt.param_groups[0]["params"])
    assert all(p is not dense for p in opt.param_groups[0]["params"])
    step()
    r = rediagonalise(slot, opt, RankCut("max_cut", 0.5, 3, 0.5))
    new = slot.factor().sigma
    assert 3 <= r < 8 and sigma not in opt.state
    assert {k: tuple(v.shape) for k, v in opt.state[new].items() if v.dim()} == {
        "exp_avg": (r, r), "exp_avg_sq": (r, r)}
    step()  # Adam steps on the sliced state
    assert new.grad.shape == (r, r)


def test_oialr_run_reports_trainable_parameters_over_time(results: Path) -> None:
    spec = resolve(RunSpec(task="ltsf", method="oialr", preset="tiny", budget={"steps": 30},
                           task_params={"model": "transformer", "d_model": 16, "d_ff": 32},
                           method_params={"every": 4, "sv_cutoff": 0.3, "trigger": "schedule",
                                          "cut": "max_cut", "keep_full_rank": "none"}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]
    history = json.loads(row["x_trainable_history"])
    counts = [c for _, c in history]
    assert counts[0] == row["x_dense_trainable_params"] == row["n_params"]
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]
    assert row["n_trainable_params"] == row["x_trainable_params"] == counts[-1]
    assert row["x_converted_layers"] == row["x_eligible_layers"] == 12  # 3 checks convert all
    assert [s for s, _ in history][1:4] == [7, 11, 15]  # delay 7 (a quarter of 30), then every 4
    assert row["primary_value"] == pytest.approx(row["metric_mse"])


def test_two_ranks_stay_identical_through_conversions(results: Path) -> None:
    from joulebench.cluster.local import run_parallel

    spec = resolve(RunSpec(task="ltsf", method="oialr", preset="tiny", budget={"steps": 16}, world_size=2,
                           task_params={"model": "transformer", "d_model": 16, "d_ff": 32},
                           method_params={"every": 3, "sv_cutoff": 0.3, "trigger": "schedule",
                                          "cut": "max_cut", "keep_full_rank": "none"}))
    summary = run_parallel(spec, results, "torchrun")
    assert summary["status"] == "ok", summary
    row = Store(results).execute("SELECT * FROM runs WHERE run_key = ?", [spec.run_key]).df().iloc[0]
    assert row["x_param_spread_over_ranks"] == 0.0 and row["x_converted_layers"] == 12
    assert row["x_allreduce_bytes"] > 0 and row["x_trainable_params"] < row["x_dense_trainable_params"]


# -- the authors' setup (issue 18) -------------------------------------------------------------
def test_stability_trigger_fires_on_a_converged_layer_and_waits_on_a_moving_one() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16))
    slots = weight_slots(model)
    moving, settled = slots[0], slots[1]
    tracker = BasisTracker()
    assert tracker.similarity(settled) is None  # the first check has nothing to compare with
    assert tracker.similarity(settled) == pytest.approx(1.0, abs=1e-5)  # converged: U Vᵀ still
    tracker.similarity(moving)
    with torch.no_grad():
        moving.dense().copy_(torch.randn(16, 16))  # a basis that is still moving
    assert tracker.similarity(moving) < 0.5

    class HP:
        trigger, stability_threshold, layer_fraction = "stability", 0.99, 1.0
    schedule = Schedule([settled, moving], HP())
    assert schedule.due() == []  # first look
    with torch.no_grad():
        moving.dense().copy_(torch.randn(16, 16))
    assert [s.name for s in schedule.due()] == [settled.name]
    assert schedule.similarities[settled.name] == pytest.approx(1.0, abs=1e-5)
    assert [s.name for s in schedule.pending] == [moving.name]
    assert [s.name for s in schedule.due()] == [moving.name]  # it stopped moving


def test_layers_checked_grow_by_a_fraction_from_the_output_side() -> None:
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(10)])
    slots = list(reversed(weight_slots(model)))

    class HP:
        trigger, stability_threshold, layer_fraction = "stability", 0.99, 0.2
    schedule = Schedule(slots, HP())
    schedule.due()  # looks at the last two layers
    assert set(schedule.tracker.previous) == {"9.weight", "8.weight"}
    assert {s.name for s in schedule.due()} == {"9.weight", "8.weight"}  # stable: converted
    assert set(schedule.tracker.previous) == {"9.weight", "8.weight", "7.weight", "6.weight"}


def test_first_and_last_layers_stay_full_rank_by_default(results: Path) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8))
    slots = weight_slots(model)
    assert full_rank_kept(slots, "first_last") == {"0.weight", "2.weight"}
    assert full_rank_kept(slots, "last") == {"2.weight"} and full_rank_kept(slots, "none") == set()
    spec = resolve(RunSpec(task="ltsf", method="oialr", preset="tiny", budget={"steps": 30},
                           task_params={"model": "transformer", "d_model": 16, "d_ff": 32},
                           method_params={"every": 4, "stability_threshold": 0.0}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]
    kept = json.loads(row["x_kept_full_rank"])
    assert len(kept) == 2 and row["x_eligible_layers"] == 10
    assert not set(kept) & set(json.loads(row["x_ranks"]))
    assert row["x_converted_layers"] > 0


def test_the_authors_cut_is_relative_to_the_singular_value_at_one_percent() -> None:
    s = torch.cat([torch.tensor([100.0]), torch.linspace(10, 1, 199)])  # rank 200: reference s[2]
    assert authors_rank(s, 0.1) == int((s >= 0.1 * s[2]).sum())
    assert authors_rank(s, 0.1) > truncation_rank(s, 0.1, 1)  # not relative to the largest
    assert authors_rank(torch.tensor([1.0, 1e-3, 1e-4]), 0.1) == 1
    assert RankCut("authors", 0.1).keep(s) == authors_rank(s, 0.1)


def test_trigger_and_cut_parameters_enter_only_the_keys_of_runs_they_affect() -> None:
    from joulebench.harness.params import SpecError

    def spec(**method_params) -> RunSpec:
        return resolve(RunSpec(task="ltsf", method="oialr", preset="tiny", budget={"steps": 4},
                               task_params={"model": "transformer"}, method_params=method_params))
    authors = spec()
    assert {"stability_threshold", "layer_fraction"} <= set(authors.method_params)
    assert not {"convert_checks", "max_cut", "min_rank"} & set(authors.method_params)
    schedule = spec(trigger="schedule", cut="max_cut")
    assert {"convert_checks", "max_cut", "min_rank"} <= set(schedule.method_params)
    assert not {"stability_threshold", "layer_fraction"} & set(schedule.method_params)
    # where it applies, it is part of the key
    assert spec(trigger="schedule", convert_checks=5).run_key != spec(trigger="schedule").run_key
    with pytest.raises(SpecError, match="'convert_checks' applies only when trigger in"):
        spec(convert_checks=5)
    with pytest.raises(SpecError, match="'max_cut' applies only when cut in"):
        spec(max_cut=0.3)
    with pytest.raises(SpecError, match="'stability_threshold' applies only when trigger in"):
        spec(trigger="schedule", stability_threshold=0.5)
