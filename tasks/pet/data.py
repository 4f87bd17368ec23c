"""The PET coincidence file format (``.npz``), its reader and writer, and the torch data set.

One file holds one split. Arrays (see ``data_cards/pet-sim.md``):

- ``format``: the string ``"joulebench-pet"``; ``format_version``: int (1)
- ``config``: JSON of the detector (rings, crystals, n_steps, ...; only ``rings``, ``crystals`` and
  ``n_steps`` are required in files a user brings)
- ``n_samples``: int
- ``hits``: int32 (n, 3) = (sample, step, crystal); binary, so each row at most once
- ``pairs``: int32 (m, 5) = (sample, crystal_a, step_a, crystal_b, step_b): the true coincidences
- ``hit_kind``: int8 (n,), optional: 0 true, 1 single, 2 scatter, 3 random (never a model input)
- ``hit_event``: int32 (n,), optional: the annihilation a hit came from, -1 for randoms
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from joulebench.tasks.pet.simulate import FORMAT_VERSION, DetectorConfig, SimData

MAGIC = "joulebench-pet"


def write_npz(path: str | Path, data: SimData) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"format": np.array(MAGIC), "format_version": np.array(FORMAT_VERSION),
              "config": np.array(data.config.to_json()), "n_samples": np.array(data.n_samples),
              "hits": data.hits.astype(np.int32), "pairs": data.pairs.astype(np.int32)}
    if data.hit_kind is not None:
        arrays["hit_kind"] = data.hit_kind.astype(np.int8)
    if data.hit_event is not None:
        arrays["hit_event"] = data.hit_event.astype(np.int32)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def read_npz(path: str | Path) -> SimData:
    """Read and check a file of this format (written by the simulator or brought by a user)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PET data file {path} not found")
    with np.load(path, allow_pickle=False) as z:
        names = set(z.files)
        missing = {"config", "n_samples", "hits", "pairs"} - names
        if missing:
            raise ValueError(f"{path}: not a joulebench PET file, missing arrays {sorted(missing)}")
        if "format" in names and str(z["format"]) != MAGIC:
            raise ValueError(f"{path}: format is {str(z['format'])!r}, expected {MAGIC!r}")
        version = int(z["format_version"]) if "format_version" in names else FORMAT_VERSION
        if version > FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {version} is newer than this reader "
                             f"({FORMAT_VERSION})")
        cfg = DetectorConfig.from_json(str(z["config"]))
        n = int(z["n_samples"])
        hits = np.asarray(z["hits"], dtype=np.int64).reshape(-1, 3)
        pairs = np.asarray(z["pairs"], dtype=np.int64).reshape(-1, 5)
        kind = np.asarray(z["hit_kind"], dtype=np.int8) if "hit_kind" in names else None
        event = np.asarray(z["hit_event"], dtype=np.int32) if "hit_event" in names else None
    _check(path, cfg, n, hits, pairs)
    order = np.lexsort((hits[:, 2], hits[:, 1], hits[:, 0]))
    hits = hits[order]
    kind = kind[order] if kind is not None and len(kind) == len(order) else None
    event = event[order] if event is not None and len(event) == len(order) else None
    swap = pairs[:, 1] > pairs[:, 3]
    pairs[swap] = pairs[swap][:, [0, 3, 4, 1, 2]]
    pairs = pairs[np.lexsort((pairs[:, 1], np.maximum(pairs[:, 2], pairs[:, 4]), pairs[:, 0]))]
    return SimData(cfg, n, hits.astype(np.int32), pairs.astype(np.int32), kind, event)


def _check(path: Path, cfg: DetectorConfig, n: int, hits: np.ndarray, pairs: np.ndarray) -> None:
    def bad(what: str) -> ValueError:
        return ValueError(f"{path}: {what}")

    if len(hits) and (hits[:, 0].min() < 0 or hits[:, 0].max() >= n):
        raise bad("hits: sample index outside [0, n_samples)")
    if len(hits) and (hits[:, 1].min() < 0 or hits[:, 1].max() >= cfg.n_steps):
        raise bad(f"hits: step outside [0, n_steps={cfg.n_steps})")
    if len(hits) and (hits[:, 2].min() < 0 or hits[:, 2].max() >= cfg.n_crystals):
        raise bad(f"hits: crystal outside [0, rings*crystals={cfg.n_crystals})")
    if len(pairs) and (pairs[:, [1, 3]].min() < 0 or pairs[:, [1, 3]].max() >= cfg.n_crystals):
        raise bad("pairs: crystal outside the detector")
    if len(pairs) and (pairs[:, 0].min() < 0 or pairs[:, 0].max() >= n):
        raise bad("pairs: sample index outside [0, n_samples)")


class PETDataset(Dataset):
    """Dense binary spike trains (n_steps, n_crystals) per sample and their target spike trains.

    The target has a spike on both crystals of each true coincidence at the step its later hit
    arrives (the earliest step a causal detector can know the pair is complete).
    """

    def __init__(self, data: SimData) -> None:
        self.data = data
        self.T, self.C = data.config.n_steps, data.config.n_crystals
        self.hit_off = data.sample_slices(data.hits)
        self.pair_off = data.sample_slices(data.pairs)

    def __len__(self) -> int:
        return self.data.n_samples

    def dense_hits(self, lo: int, hi: int) -> torch.Tensor:
        """Hits of samples [lo, hi) as a float tensor (hi - lo, n_steps, n_crystals)."""
        rows = self.data.hits[self.hit_off[lo]:self.hit_off[hi]]
        out = torch.zeros(hi - lo, self.T, self.C)
        if len(rows):
            r = torch.from_numpy(rows.astype(np.int64))
            out[r[:, 0] - lo, r[:, 1], r[:, 2]] = 1.0
        return out

    def dense_target(self, lo: int, hi: int) -> torch.Tensor:
        rows = self.data.pairs[self.pair_off[lo]:self.pair_off[hi]].astype(np.int64)
        out = torch.zeros(hi - lo, self.T, self.C)
        if len(rows):
            s = torch.from_numpy(rows[:, 0] - lo)
            t = torch.from_numpy(np.maximum(rows[:, 2], rows[:, 4]))
            out[s, t, torch.from_numpy(rows[:, 1])] = 1.0
            out[s, t, torch.from_numpy(rows[:, 3])] = 1.0
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"index": torch.tensor(i), "hits": self.dense_hits(i, i + 1)[0],
                "target": self.dense_target(i, i + 1)[0]}
