"""A seeded numpy simulator of coincidence detection in a cylindrical PET detector.

The detector is ``rings`` rings of ``crystals`` crystals each (crystal id = ring · crystals + index).
Time is cut into samples of ``n_steps`` steps. In each sample, positron annihilations arrive as a
Poisson process (``activity`` per step). Each annihilation emits two back-to-back photons: the first
hits a random crystal, the second the crystal opposite it, spread by up to ``spread`` crystals around
the ring and ``ring_spread`` rings along the axis (a partner that leaves the rings is lost). Each
photon is detected with probability ``efficiency``; a detected photon may be Compton-scattered
(``scatter``), which moves it to a crystal far from the line of response and delays it. Every
crystal adds a fixed delay (0..``max_delay`` steps, drawn once from ``detector_seed``) and a
Gaussian jitter (``jitter`` steps). Random singles arrive at ``randoms`` per step over the whole
detector.

A *true coincidence* is an annihilation whose two photons were both detected, unscattered, inside
the sample. Its time is the step of its later hit (when the pair is complete).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

FORMAT_VERSION = 1

# hit kinds stored per hit (diagnostics; the task never reads them as input)
KIND_TRUE, KIND_SINGLE, KIND_SCATTER, KIND_RANDOM = 0, 1, 2, 3


@dataclass(frozen=True)
class DetectorConfig:
    rings: int = 4
    crystals: int = 32
    n_steps: int = 64
    activity: float = 0.1
    efficiency: float = 0.8
    spread: int = 2
    ring_spread: float = 0.5
    max_delay: int = 3
    jitter: float = 0.3
    scatter: float = 0.1
    randoms: float = 0.05
    detector_seed: int = 1234

    @property
    def n_crystals(self) -> int:
        return self.rings * self.crystals

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DetectorConfig:
        raw = json.loads(text)
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def with_(self, **changes: Any) -> DetectorConfig:
        return replace(self, **changes)


GEOMETRIES = {
    "tiny": {"rings": 2, "crystals": 16, "n_steps": 32},
    "small": {"rings": 4, "crystals": 32, "n_steps": 64},
    "clinical": {"rings": 16, "crystals": 180, "n_steps": 64},
}


@dataclass
class SimData:
    """Sparse hits and true pairs of ``n_samples`` samples (the in-memory form of the file format).

    ``hits``: int32 (n, 3) rows of (sample, step, crystal), sorted, unique (hits are binary).
    ``hit_kind``: int8 (n,) kind of each hit (true/single/scatter/random; a hit shared by two
    photons keeps the smallest kind). ``pairs``: int32 (m, 5) rows of (sample, crystal_a, step_a,
    crystal_b, step_b) with crystal_a < crystal_b.
    """

    config: DetectorConfig
    n_samples: int
    hits: np.ndarray
    pairs: np.ndarray
    hit_kind: np.ndarray | None = None
    hit_event: np.ndarray | None = None
    """int32 (n,): the annihilation each hit came from (-1: random single); diagnostics only."""

    @property
    def pair_time(self) -> np.ndarray:
        return np.maximum(self.pairs[:, 2], self.pairs[:, 4])

    def sample_slices(self, table: np.ndarray) -> np.ndarray:
        """Offsets into a table sorted by sample: rows of sample i are [off[i], off[i+1])."""
        return np.searchsorted(table[:, 0], np.arange(self.n_samples + 1), side="left")


def crystal_delays(cfg: DetectorConfig) -> np.ndarray:
    """The fixed per-crystal delays in steps (a property of the detector, not of a data set)."""
    rng = np.random.default_rng(cfg.detector_seed)
    return rng.integers(0, cfg.max_delay + 1, size=cfg.n_crystals).astype(np.float64)


def opposite(cfg: DetectorConfig, crystal: np.ndarray) -> np.ndarray:
    """The crystal exactly opposite in the same ring."""
    ring, idx = np.divmod(crystal, cfg.crystals)
    return ring * cfg.crystals + (idx + cfg.crystals // 2) % cfg.crystals


def simulate(cfg: DetectorConfig, n_samples: int, seed: int) -> SimData:
    rng = np.random.default_rng(seed)
    delays = crystal_delays(cfg)
    T, N, R = cfg.n_steps, cfg.crystals, cfg.rings
    # annihilations start early enough that delayed hits fill the first steps like the others
    lead = cfg.max_delay + 3.0 + 3.0 * cfg.jitter
    span = T + lead
    n_events = rng.poisson(cfg.activity * span, size=n_samples)
    total = int(n_events.sum())
    ev_sample = np.repeat(np.arange(n_samples), n_events)
    t0 = rng.uniform(-lead, T, size=total)
    ring_a = rng.integers(0, R, size=total)
    idx_a = rng.integers(0, N, size=total)
    offset = rng.integers(-cfg.spread, cfg.spread + 1, size=total)
    idx_b = (idx_a + N // 2 + offset) % N
    ring_b = ring_a + np.rint(rng.normal(0.0, cfg.ring_spread, size=total)).astype(np.int64) \
        if cfg.ring_spread > 0 else ring_a.copy()
    inside_b = (ring_b >= 0) & (ring_b < R)
    ring_b = np.clip(ring_b, 0, R - 1)
    crystal = np.stack([ring_a * N + idx_a, ring_b * N + idx_b], axis=1)
    detected = rng.random((total, 2)) < cfg.efficiency
    detected[:, 1] &= inside_b
    scattered = detected & (rng.random((total, 2)) < cfg.scatter)
    # a scattered photon lands far from its line of response, a few steps late
    shift = rng.integers(cfg.spread + 2, max(N // 4, cfg.spread + 3) + 1, size=(total, 2))
    shift *= rng.choice([-1, 1], size=(total, 2))
    s_ring = np.clip(crystal // N + rng.integers(-1, 2, size=(total, 2)), 0, R - 1)
    s_crystal = s_ring * N + (crystal % N + shift) % N
    crystal = np.where(scattered, s_crystal, crystal)
    extra = np.where(scattered, rng.uniform(0.0, 2.0, size=(total, 2)), 0.0)
    jitter = rng.normal(0.0, cfg.jitter, size=(total, 2)) if cfg.jitter > 0 else np.zeros((total, 2))
    step = np.floor(t0[:, None] + delays[crystal] + extra + jitter).astype(np.int64)
    in_window = (step >= 0) & (step < T)
    keep = detected & in_window
    true_pair = keep.all(axis=1) & ~scattered.any(axis=1)
    kind = np.where(scattered, KIND_SCATTER, np.where(true_pair[:, None], KIND_TRUE, KIND_SINGLE))

    sample2 = np.repeat(ev_sample[:, None], 2, axis=1)
    hits = [np.stack([sample2[keep], step[keep], crystal[keep]], axis=1)]
    kinds = [kind[keep]]
    events = [np.repeat(np.arange(total)[:, None], 2, axis=1)[keep]]
    if cfg.randoms > 0:
        n_rand = rng.poisson(cfg.randoms * T, size=n_samples)
        r_sample = np.repeat(np.arange(n_samples), n_rand)
        hits.append(np.stack([r_sample, rng.integers(0, T, size=r_sample.size),
                              rng.integers(0, cfg.n_crystals, size=r_sample.size)], axis=1))
        kinds.append(np.full(r_sample.size, KIND_RANDOM))
        events.append(np.full(r_sample.size, -1))
    all_hits = np.concatenate(hits).astype(np.int64)
    all_kinds = np.concatenate(kinds).astype(np.int8)
    all_events = np.concatenate(events).astype(np.int64)
    # binary hits: two photons in one crystal at one step are one hit (keep the smallest kind)
    order = np.lexsort((all_kinds, all_hits[:, 2], all_hits[:, 1], all_hits[:, 0]))
    all_hits, all_kinds, all_events = all_hits[order], all_kinds[order], all_events[order]
    first = np.ones(len(all_hits), dtype=bool)
    first[1:] = np.any(all_hits[1:] != all_hits[:-1], axis=1)
    all_hits, all_kinds, all_events = all_hits[first], all_kinds[first], all_events[first]

    a, b = crystal[true_pair, 0], crystal[true_pair, 1]
    sa, sb = step[true_pair, 0], step[true_pair, 1]
    swap = a > b
    pairs = np.stack([ev_sample[true_pair], np.where(swap, b, a), np.where(swap, sb, sa),
                      np.where(swap, a, b), np.where(swap, sa, sb)], axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], np.maximum(pairs[:, 2], pairs[:, 4]), pairs[:, 0]))]
    return SimData(cfg, n_samples, all_hits.astype(np.int32), pairs.astype(np.int32),
                   all_kinds, all_events.astype(np.int32))


def stats(data: SimData) -> dict[str, float]:
    """Rates that describe how hard a data set is (hits, true pairs and pile-up per sample)."""
    n = max(data.n_samples, 1)
    out = {"hits_per_sample": len(data.hits) / n, "pairs_per_sample": len(data.pairs) / n}
    if data.hit_kind is not None and len(data.hit_kind):
        for name, k in (("true", KIND_TRUE), ("single", KIND_SINGLE), ("scatter", KIND_SCATTER),
                        ("random", KIND_RANDOM)):
            out[f"frac_{name}"] = float(np.mean(data.hit_kind == k))
    return out

