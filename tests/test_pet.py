"""PET coincidence task: simulator statistics, file format, sorter, metric, PETNet and harness runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.tasks.pet.data import PETDataset, read_npz, write_npz
from joulebench.tasks.pet.metrics import match, prf, truth_table
from joulebench.tasks.pet.model import PETNet, decode, geometry_matrix, petnet_loss
from joulebench.tasks.pet.simulate import KIND_RANDOM, KIND_SCATTER, DetectorConfig, crystal_delays, simulate
from joulebench.tasks.pet.sorter import sort_coincidences

CLEAN = dict(rings=2, crystals=16, n_steps=32, scatter=0.0, randoms=0.0, jitter=0.0)


def test_detected_fraction_is_efficiency_squared() -> None:
    eff, act, n = 0.7, 0.1, 2000
    cfg = DetectorConfig(**CLEAN, efficiency=eff, activity=act, ring_spread=0.0, max_delay=0)
    data = simulate(cfg, n, seed=1)
    # without delays or jitter a photon's step is floor(t0): events with t0 in [0, T) are inside
    events_inside = act * cfg.n_steps * n
    assert len(data.pairs) / events_inside == pytest.approx(eff**2, rel=0.05)
    assert len(data.hits) / events_inside == pytest.approx(2 * eff, rel=0.05)


def test_pair_geometry_and_fixed_delays() -> None:
    cfg = DetectorConfig(**CLEAN, spread=2, activity=0.05, ring_spread=0.5, max_delay=3)
    data = simulate(cfg, 1000, seed=2)
    n = cfg.crystals
    sample, a, ta, b, tb = data.pairs.T.astype(np.int64)
    offset = (b % n - a % n - n // 2) % n
    offset = np.where(offset > n // 2, offset - n, offset)
    assert set(np.unique(offset)) == set(range(-cfg.spread, cfg.spread + 1))
    assert np.all(a != b) and np.abs(a // n - b // n).max() <= 2
    # no jitter: the time difference of a pair is exactly the difference of the crystal delays
    delays = crystal_delays(cfg)
    assert np.array_equal(tb - ta, (delays[b] - delays[a]).astype(np.int64))
    assert np.all((ta >= 0) & (ta < cfg.n_steps) & (tb >= 0) & (tb < cfg.n_steps))


def test_scatter_and_randoms_are_labelled() -> None:
    cfg = DetectorConfig(rings=2, crystals=16, n_steps=32, scatter=0.3, randoms=0.05,
                         activity=0.05)
    data = simulate(cfg, 500, seed=3)
    kinds = np.bincount(data.hit_kind, minlength=4)
    assert kinds[KIND_SCATTER] > 0 and kinds[KIND_RANDOM] > 0
    assert len(np.unique(data.hits, axis=0)) == len(data.hits)  # binary: no duplicate hits
    assert np.all(data.hit_event[data.hit_kind == KIND_RANDOM] == -1)
    assert np.array_equal(simulate(cfg, 500, seed=3).hits, data.hits)  # seeded
    assert not np.array_equal(simulate(cfg, 500, seed=4).hits, data.hits)


def _pileup_free(data, window: int) -> np.ndarray:
    """Samples whose annihilations are further apart in time than the window."""
    ok = np.ones(data.n_samples, dtype=bool)
    h, ev = data.hits.astype(np.int64), data.hit_event.astype(np.int64)
    for s in range(data.n_samples):
        rows = h[:, 0] == s
        spans = sorted((h[rows & (ev == e), 1].min(), h[rows & (ev == e), 1].max())
                       for e in np.unique(ev[rows]))
        ok[s] = all(nxt[0] - cur[1] > window for cur, nxt in zip(spans, spans[1:], strict=False))
    return ok


def test_sorter_is_exact_without_pileup_scatter_or_randoms() -> None:
    cfg = DetectorConfig(**CLEAN, activity=0.02, efficiency=0.8, max_delay=3)
    data = simulate(cfg, 400, seed=5)
    window = cfg.max_delay
    clean = _pileup_free(data, window)
    assert clean.mean() > 0.7
    keep_hits = clean[data.hits[:, 0]]
    keep_pairs = clean[data.pairs[:, 0]]
    pred = sort_coincidences(data.hits[keep_hits], window, cfg.crystals)
    truth = truth_table(data.pairs[keep_pairs])
    assert len(truth) > 100
    tp, fp, fn = match(pred, truth, tol=0)
    assert (fp, fn) == (0, 0) and tp == len(truth)
    # with pile-up kept in, the sorter loses pairs, and a too small window misses delayed ones
    tp_all, _, fn_all = match(sort_coincidences(data.hits, window, cfg.crystals),
                              truth_table(data.pairs), tol=0)
    assert fn_all > 0
    assert match(sort_coincidences(data.hits[keep_hits], 0, cfg.crystals), truth, 0)[2] > 0


def test_sorter_groups_of_three_are_dropped_and_acceptance_applies() -> None:
    hits = np.array([[0, 5, 1], [0, 6, 9], [0, 20, 2], [0, 21, 3], [0, 21, 11],
                     [1, 3, 0], [1, 4, 4]])
    pred = sort_coincidences(hits, 2, crystals_per_ring=16)
    assert pred.tolist() == [[0, 1, 9, 6], [1, 0, 4, 4]]
    # crystal 4 is 4 crystals from the one opposite crystal 0: outside an acceptance of 2
    assert sort_coincidences(hits, 2, 16, accept=2).tolist() == [[0, 1, 9, 6]]


def test_metric_matches_crystals_and_time() -> None:
    truth = np.array([[0, 1, 9, 6], [0, 2, 10, 20], [1, 3, 11, 4]])
    pred = np.array([[0, 9, 1, 7],      # crystals swapped, 1 step late: TP with tol 1
                     [0, 9, 1, 7],      # the same pair again: FP (each truth matches once)
                     [0, 2, 11, 20],    # wrong crystal: FP
                     [1, 3, 11, 9]])    # right crystals, too late: FP
    assert match(pred, truth, tol=1) == (1, 3, 2)
    assert match(pred, truth, tol=5) == (2, 2, 1)
    assert prf(1, 3, 2)["recall"] == pytest.approx(1 / 3)
    assert prf(0, 0, 0)["f1"] == 0.0


def test_file_round_trip_and_user_files(tmp_path: Path) -> None:
    cfg = DetectorConfig(rings=2, crystals=16, n_steps=32)
    data = simulate(cfg, 20, seed=0)
    back = read_npz(write_npz(tmp_path / "train.npz", data))
    assert back.config == cfg and back.n_samples == 20
    assert np.array_equal(back.hits, data.hits) and np.array_equal(back.pairs, data.pairs)
    assert np.array_equal(back.hit_kind, data.hit_kind)
    # a user's minimal file: only the required arrays, unsorted hits, pairs in either order
    np.savez(tmp_path / "user.npz", config='{"rings": 1, "crystals": 8, "n_steps": 10}',
             n_samples=2, hits=np.array([[1, 3, 6], [0, 2, 0], [0, 4, 4]]),
             pairs=np.array([[0, 4, 4, 0, 2]]))
    user = read_npz(tmp_path / "user.npz")
    assert user.hits.tolist() == [[0, 2, 0], [0, 4, 4], [1, 3, 6]]
    assert user.pairs.tolist() == [[0, 0, 2, 4, 4]] and user.hit_kind is None
    np.savez(tmp_path / "bad.npz", config='{"rings": 1, "crystals": 8, "n_steps": 10}',
             n_samples=1, hits=np.array([[0, 12, 1]]), pairs=np.zeros((0, 5)))
    with pytest.raises(ValueError, match="step outside"):
        read_npz(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        read_npz(tmp_path / "missing.npz")


def test_dataset_targets_and_decode_round_trip() -> None:
    cfg = DetectorConfig(rings=2, crystals=16, n_steps=32, activity=0.1)
    data = simulate(cfg, 50, seed=7)
    ds = PETDataset(data)
    x, y = ds.dense_hits(0, 50), ds.dense_target(0, 50)
    assert x.shape == (50, 32, 32) and int(x.sum()) == len(data.hits)
    # both crystals of a pair spike when its later hit arrives, after a hit of their own
    assert 0.95 * 2 * len(data.pairs) <= int(y.sum()) <= 2 * len(data.pairs)
    seen = torch.cumsum(x, dim=1) > 0
    assert torch.all(seen[y > 0])
    # decoding the target spike trains gives back the true coincidences (few overlaps aside)
    tp, fp, fn = match(decode(y, cfg.crystals, max_dev=cfg.spread + 1), truth_table(data.pairs), 0)
    assert tp >= 0.95 * len(data.pairs) and fp <= 0.05 * len(data.pairs)


def test_geometry_marks_the_opposite_crystals() -> None:
    cfg = DetectorConfig(rings=2, crystals=16, n_steps=8, spread=1)
    g = geometry_matrix(cfg, reach=1, ring_reach=0)
    assert torch.nonzero(g[0]).flatten().tolist() == [7, 8, 9]
    assert torch.nonzero(g[16 + 3]).flatten().tolist() == [16 + 10, 16 + 11, 16 + 12]


@pytest.mark.parametrize("geometry,arch", [(True, "local"), (False, "local"), (True, "dense")])
def test_petnet_spikes_and_gradients_reach_the_input_layer(geometry: bool, arch: str) -> None:
    torch.manual_seed(0)
    cfg = DetectorConfig(rings=1, crystals=8, n_steps=16, spread=1, activity=0.2)
    ds = PETDataset(simulate(cfg, 32, seed=0))
    x, y = ds.dense_hits(0, 32), ds.dense_target(0, 32)
    net = PETNet(cfg, hidden=8, taps=3, geometry=geometry, arch=arch)
    out = net(x)
    assert out.shape == x.shape and set(out.unique().tolist()) <= {0.0, 1.0}
    petnet_loss(out, y, w_count=0.1, w_time=1.0, tau=2.0).backward()
    assert net.fc1.weight.grad.abs().sum() > 0  # through two spiking layers: the surrogate
    if not geometry and arch == "local":
        assert net.mix.weight.grad.abs().sum() > 0  # the learned stand-in for the geometry


def test_petnet_learns_coincidences() -> None:
    torch.manual_seed(0)
    cfg = DetectorConfig(rings=1, crystals=16, n_steps=32, activity=0.1, scatter=0.0,
                         randoms=0.0)
    ds = PETDataset(simulate(cfg, 256, seed=0))
    net = PETNet(cfg, hidden=8, taps=5, arch="local")  # the shared-weight variant
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = ds.dense_hits(0, 256), ds.dense_target(0, 256)
    truth = truth_table(ds.data.pairs)
    with torch.no_grad():
        before = prf(*match(decode(net(x), cfg.crystals, cfg.spread + 1), truth))["f1"]
    for step in range(60):
        lo = (step % 8) * 32
        opt.zero_grad()
        petnet_loss(net(x[lo:lo + 32]), y[lo:lo + 32], 0.1, 1.0, 2.0).backward()
        opt.step()
    with torch.no_grad():
        after = prf(*match(decode(net(x), cfg.crystals, cfg.spread + 1), truth))["f1"]
    assert after > before + 0.25 and after > 0.3


def _run(results: Path, **spec) -> dict:
    resolved = resolve(RunSpec(task="pet", preset="tiny", **spec))
    return Runner(Store(results)).run(resolved)


def test_decode_uses_geometry_only_when_the_network_has_it() -> None:
    spikes = torch.zeros(1, 4, 16)
    spikes[0, 1, [0, 3]] = 1.0                       # crystals 0 and 3 spike together: not opposite
    spikes[0, 2, [5, 13]] = 1.0                      # 5 and 13: opposite on a 16-crystal ring
    with_geo = decode(spikes, 16, max_dev=1)
    assert with_geo[:, 1:3].tolist() == [[5, 13]]
    without = decode(spikes, 16, max_dev=None)
    assert sorted(without[:, 1:3].tolist()) == [[0, 3], [5, 13]]


def test_tiny_preset_is_the_dense_network_and_learns(results: Path) -> None:
    petnet = _run(results, method="backprop")
    assert petnet["status"] == "ok", petnet.get("traceback")
    assert petnet["model"] == "petnet" and petnet["gradient_updates"] == 80
    assert petnet["metric_f1"] > 0.2 and petnet["metric_events_per_s"] > 0  # F1 0 before
    spec = resolve(RunSpec(task="pet", preset="tiny"))
    assert spec.task_params["arch"] == "dense" and spec.task_params["taps"] == 1
    nogeo = _run(results, method="backprop", task_params={"geometry": False}, budget={"steps": 2})
    assert nogeo["status"] == "ok" and nogeo["model"] == "petnet-nogeo"


def test_sorter_runs_through_the_harness(results: Path) -> None:
    sorter = _run(results, method="time_window_sorter", task_params={"model": "sorter"})
    assert sorter["status"] == "ok", sorter.get("traceback")
    assert sorter["model"] == "sorter" and sorter["gradient_updates"] == 0
    assert sorter["samples"] > 0 and sorter["x_window"] >= 0
    assert math.isfinite(sorter["primary_value"]) and sorter["primary_value"] > 0.3
    fixed = _run(results, method="backprop", task_params={"model": "sorter"})
    assert fixed["status"] == "ok" and fixed["gradient_updates"] == 0
    with pytest.raises(ValueError, match="window_sorter"):
        resolve(RunSpec(task="pet", preset="tiny", method="time_window_sorter"))
