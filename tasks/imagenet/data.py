"""ImageNet in the ImageFolder layout: locating it, splitting it, transforming it.

Splits (the same for the real data and the generated stand-in):

* ``train``: ``train/`` minus a held-out slice of ``holdout_per_class`` images per class, optionally
  cut to ``subset_per_class`` images per class (class-stratified, chosen by ``data_seed``);
* ``val``: that held-out slice of ``train/`` (model selection, time-to-target), eval transform;
* ``test``: ``val/`` (the ILSVRC-2012 validation set in class folders), eval transform. It is the
  figure papers report as "validation accuracy"; here it is never used to choose anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import v2

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224
"""Eval: resize the shorter side to size × 256/224, then centre-crop size (the ResNet protocol)."""

LAYOUT = ("expected the ImageFolder layout DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG "
          "(1,000 class folders each; val/ sorted into class folders as by the usual valprep "
          "script; see data_cards/imagenet.md)")


def locate(data_dir: str) -> Path:
    """The root holding ``train/`` and ``val/``, or one FileNotFoundError that says what to put where."""
    if not data_dir:
        raise FileNotFoundError(f"dataset imagenet needs -T data_dir=DIR: {LAYOUT}")
    root = Path(data_dir).expanduser()
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise FileNotFoundError(f"{root}: no {' or '.join(s + '/' for s in missing)} folder; {LAYOUT}")
    return root


class _Folder(ImageFolder):
    """An ImageFolder of the first ``max_classes`` class folders (sorted), images left untransformed."""

    def __init__(self, root: Path, max_classes: int = 0) -> None:
        self.max_classes = max_classes
        super().__init__(str(root))

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes, _ = super().find_classes(directory)
        if self.max_classes:
            classes = classes[:self.max_classes]
        return classes, {c: i for i, c in enumerate(classes)}


@lru_cache(maxsize=8)
def scan(root: str, max_classes: int, mtime: float) -> _Folder:
    """One scan of a folder per worker process (1.28 M files take a while); ``mtime`` keys the cache."""
    return _Folder(Path(root), max_classes)


def folders(root: Path, max_classes: int) -> tuple[_Folder, _Folder]:
    """The ``train/`` and ``val/`` folders; their class lists must agree."""
    train, val = (scan(str(root / s), max_classes, (root / s).stat().st_mtime) for s in ("train", "val"))
    if train.classes != val.classes:
        only = sorted(set(train.classes) ^ set(val.classes))[:3]
        raise ValueError(f"{root}: train/ and val/ hold different class folders (e.g. {only}); {LAYOUT}")
    return train, val


def stratified(targets: list[int] | np.ndarray, holdout: int, keep: int, seed: int,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a random ``holdout`` images for validation and ``keep`` of the rest (0: all) for
    training; deterministic given ``seed``. Returns (train indices, held-out indices), sorted."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    train, held = [], []
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        if len(members) <= holdout:
            raise ValueError(f"class {label} has {len(members)} training images; holdout_per_class="
                             f"{holdout} would leave none for training")
        held.append(members[:holdout])
        rest = members[holdout:]
        train.append(rest[:keep] if keep else rest)
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def train_transform(size: int, scale_min: float) -> transforms.Compose:
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


def eval_transform(size: int) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize(round(size * RESIZE_RATIO), antialias=True),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


class Split(Dataset):
    """Some images of a folder under one transform; items are ``{"x", "y", "index"}``.

    ``index`` is the position in this split (0 … len−1), for methods that keep per-sample state.
    """

    def __init__(self, folder: ImageFolder, indices: np.ndarray, transform) -> None:
        self.folder, self.indices, self.transform = folder, np.asarray(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> np.ndarray:
        return np.asarray(self.folder.targets)[self.indices]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        path, label = self.folder.samples[int(self.indices[i])]
        if self.transform is None:  # decoded later, on the run's device (``DeviceDecode``)
            return {"jpeg": read_file(path), "y": torch.tensor(label), "index": torch.tensor(i)}
        image = self.folder.loader(path)
        return {"x": self.transform(image), "y": torch.tensor(label), "index": torch.tensor(i)}


@dataclass(frozen=True)
class Jpegs:
    """A batch's JPEG files as one byte buffer and each file's length. One storage crosses from a
    loader worker to the training process per batch: a list of one tensor per file (as
    ``read_file`` returns them) failed to pickle there ("Bad file descriptor") and the training
    process waited forever. Not a tensor, so ``TrainContext.to_device`` leaves it on the host,
    where ``decode_jpeg`` wants its input (nvJPEG then decodes on the device)."""

    data: torch.Tensor  # uint8, the files back to back
    sizes: tuple[int, ...]

    def files(self) -> list[torch.Tensor]:
        return list(torch.split(self.data, list(self.sizes)))


def collate_jpegs(items: list[dict[str, torch.Tensor]]) -> dict[str, object]:
    """A batch of undecoded JPEGs (their lengths differ, so they are packed, see ``Jpegs``)."""
    files = [item["jpeg"] for item in items]
    return {"jpeg": Jpegs(torch.cat(files), tuple(len(f) for f in files)),
            "y": torch.stack([item["y"] for item in items]),
            "index": torch.stack([item["index"] for item in items])}


class DeviceDecode:
    """JPEG bytes → a normalised image batch on ``device``: ``torchvision.io.decode_jpeg`` decodes
    the whole list at once (nvJPEG on CUDA, so the loader workers only read files), then the same
    crops as ``train_transform`` / ``eval_transform`` run on the decoded tensors.

    Why: at 224 px one loader worker decodes and crops ~500 images/s; an H100 consumes more than
    eight workers give (``benchmarks/data_throughput.py``). Random crops draw from torch's global
    generator on the training process, not per worker, so a run no longer depends on the number
    of loader workers for its augmentation."""

    def __init__(self, size: int, scale_min: float | None, device: torch.device) -> None:
        self.device = device
        if scale_min is None:
            self.geometry = v2.Compose([v2.Resize(round(size * RESIZE_RATIO), antialias=True),
                                        v2.CenterCrop(size)])
        else:
            self.geometry = v2.Compose([v2.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True),
                                        v2.RandomHorizontalFlip()])
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1)

    def __call__(self, jpegs: Jpegs) -> torch.Tensor:
        images = decode_jpeg(jpegs.files(), mode=ImageReadMode.RGB, device=self.device)
        batch = torch.stack([self.geometry(image) for image in images]).float().div_(255)
        return (batch - self.mean) / self.std
