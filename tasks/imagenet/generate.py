"""A generated stand-in for ImageNet: an ImageFolder tree of real JPEG files with learnable textures.

The tree has the layout the task expects of the real data set (``train/<class>/*.JPEG`` and
``val/<class>/*.JPEG``), so the tiny and small presets exercise the same loading, decoding and
augmentation code as ``full``. Class c is an oriented sinusoidal grating: its orientation is one
of up to four angles between 0° and 90° (each image mirrors it at random, so the horizontal flip
of training keeps the class) and its spatial frequency one of a few bands a factor ``BAND_STEP`` apart, wide enough that
the RandomResizedCrop of the tiny/small presets (which lowers frequencies by up to 1/√scale_min)
seldom moves one band into the next. Every image draws its own phase, frequency jitter, two
colours, a weaker distractor grating of random orientation and pixel noise, so a network has to
learn orientation and scale, not a colour.

Generation is idempotent and safe when several processes start at once: a tree is written to a
temporary folder beside its final name and renamed into place; a process that loses the race
discards its copy. The folder name carries a hash of everything that shapes the images.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from joulebench.harness.cache import cache_root

VERSION = 1
"""Bump when the images change for the same configuration (a new folder name, old trees kept)."""
BASE_CYCLES = 2.5
"""Cycles per image width of the lowest frequency band."""
BAND_STEP = 1.9
MAX_ORIENTATIONS = 4
NOISE = 0.3
"""Standard deviation of the pixel noise (the grating spans about ±0.35 at full contrast)."""
DISTRACTOR = 0.7
"""Amplitude of the random-orientation grating relative to the class grating."""
ORIENT_JITTER = 0.12
"""Standard deviation of an image's orientation around its class's, in radians (≈ 7°)."""
JPEG_QUALITY = 90
MANIFEST = "generated.json"


@dataclass(frozen=True)
class GenConfig:
    classes: int = 10
    train_per_class: int = 400
    val_per_class: int = 50
    size: int = 32
    seed: int = 0

    def tag(self) -> str:
        blob = json.dumps({**asdict(self), "version": VERSION}, sort_keys=True)
        return (f"c{self.classes}-n{self.train_per_class}-v{self.val_per_class}-s{self.size}-"
                f"{hashlib.sha256(blob.encode()).hexdigest()[:10]}")


def class_name(c: int) -> str:
    """A WordNet-id-like folder name, so that sorting gives the class index (as for n01440764…)."""
    return f"n{c:08d}"


def class_layout(classes: int) -> list[tuple[float, int]]:
    """(orientation in [0, π/2], frequency band) of each class: orientations first, then bands."""
    n_orient = min(classes, MAX_ORIENTATIONS)
    return [(0.5 * math.pi * (c % n_orient) / (n_orient - 1), c // n_orient) for c in range(classes)]


def texture(label: int, cfg: GenConfig, rng: np.random.Generator) -> np.ndarray:
    """One RGB image (size × size × 3, uint8) of class ``label``."""
    theta, band = class_layout(cfg.classes)[label]
    n = cfg.size
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) / n
    cycles = BASE_CYCLES * BAND_STEP ** band * rng.uniform(0.85, 1.15)
    theta = (theta if rng.random() < 0.5 else math.pi - theta) + rng.normal(0.0, ORIENT_JITTER)
    wave = np.sin(2 * np.pi * cycles * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
    other = rng.uniform(0, np.pi)
    wave += DISTRACTOR * np.sin(2 * np.pi * rng.uniform(1.5, 9.0) * (xx * np.cos(other) + yy * np.sin(other))
                                + rng.uniform(0, 2 * np.pi))
    contrast = 0.35 * rng.uniform(0.5, 1.0)
    mix = np.clip(0.5 + contrast * wave + rng.normal(0.0, NOISE, (n, n)), 0.0, 1.0)[..., None]
    dark, light = rng.uniform(0.0, 0.45, 3), rng.uniform(0.55, 1.0, 3)
    if rng.random() < 0.5:
        dark, light = light, dark
    pixels = dark + (light - dark) * mix
    return (np.clip(pixels, 0.0, 1.0) * 255).round().astype(np.uint8)


def _write_split(root: Path, split: str, per_class: int, cfg: GenConfig, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for label in range(cfg.classes):
        folder = root / split / class_name(label)
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = Image.fromarray(texture(label, cfg, rng), mode="RGB")
            image.save(folder / f"{class_name(label)}_{i}.JPEG", quality=JPEG_QUALITY)


def ensure_generated(cfg: GenConfig, parent: str | Path = "") -> Path:
    """The folder holding ``train/`` and ``val/`` for ``cfg``, generated on first use."""
    parent = Path(parent).expanduser() if parent else cache_root("imagenet-gen")
    final = parent / cfg.tag()
    if (final / MANIFEST).is_file():
        return final
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cfg.tag()}-", dir=parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        _write_split(tmp, "train", cfg.train_per_class, cfg, seed=2 * cfg.seed)
        _write_split(tmp, "val", cfg.val_per_class, cfg, seed=2 * cfg.seed + 1)
        (tmp / MANIFEST).write_text(json.dumps({**asdict(cfg), "version": VERSION}, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:  # another process renamed its copy first: theirs is identical
            if not (final / MANIFEST).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
