"""Search methods: each trial is a child run; the search row adopts the best and pays for all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from joulebench.harness.registry import registry
from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.methods.propulate_search import decode, import_propulate, limits_for
from joulebench.methods.search import search_space


def test_optuna_search_stores_one_parent_and_one_child_per_trial(results: Path) -> None:
    spec = resolve(RunSpec(task="ltsf", method="optuna", preset="tiny",
                           method_params={"trials": 3, "space": "lr"}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "ok", row["error"]
    con = Store(results).connect()
    children = con.execute("SELECT run_key, val_mse, p_lr, samples, train_s FROM runs "
                           "WHERE parent_key = ?", [spec.run_key]).fetchall()
    assert len(children) == 3 and len({c[2] for c in children}) == 3
    best = min(children, key=lambda c: c[1])
    assert row["x_best_trial"] == best[0] and row["val_mse"] == pytest.approx(best[1])
    assert json.loads(row["x_best_params"])["lr"] == pytest.approx(best[2])
    assert row["samples"] == sum(c[3] for c in children)
    assert row["train_s"] >= sum(c[4] for c in children)  # the search pays for every trial
    assert con.execute("SELECT count(*) FROM leaderboard WHERE method = 'backprop'").fetchone() == (0,)
    curve = con.execute("SELECT step, metrics_json FROM curves WHERE run_key = ? ORDER BY step",
                        [spec.run_key]).fetchall()
    values = [json.loads(m)["mse"] for _, m in curve]
    assert [s for s, _ in curve] == [1, 2, 3] and values == sorted(values, reverse=True)


def test_search_space_rejects_unknown_and_unranged_parameters() -> None:
    registry()
    with pytest.raises(ValueError, match="no parameter 'lrr'"):
        search_space("backprop", "lrr")
    space = search_space("backprop", "lr,optimizer,warmup_steps")
    limits = limits_for(space)
    assert set(limits) == {"log10_lr", "optimizer", "warmup_steps"}
    assert decode(space, {"log10_lr": -2.0, "optimizer": "sgd", "warmup_steps": 3}) == \
        {"lr": pytest.approx(0.01), "optimizer": "sgd", "warmup_steps": 3}


def test_propulate_imports_beside_numpy_2() -> None:
    propulate, get_default_propagator = import_propulate()
    assert hasattr(propulate, "Islands") and callable(get_default_propagator)
