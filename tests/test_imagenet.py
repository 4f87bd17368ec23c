"""ImageNet task: generated ImageFolder tree, splits, top-k metric, models, errors and harness runs."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from joulebench.harness.params import SpecError
from joulebench.harness.runner import Runner
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.tasks.imagenet.data import stratified
from joulebench.tasks.imagenet.generate import MANIFEST, GenConfig, ensure_generated
from joulebench.tasks.imagenet.metrics import Accuracy, topk_correct
from joulebench.tasks.imagenet.models import narrow_resnet, resnet50_model
from joulebench.tasks.imagenet.task import ImageNet

SMALL_TREE = {"gen_classes": 3, "gen_train_per_class": 12, "gen_val_per_class": 4,
              "holdout_per_class": 2}


def _task(tmp_path: Path, preset: str = "tiny", **params) -> ImageNet:
    hp = resolve(RunSpec(task="imagenet", preset=preset,
                         task_params={"data_dir": str(tmp_path), **params})).task_params
    task = ImageNet(hp, preset, 0, torch.device("cpu"))
    task.setup()
    return task


def test_generated_tree_is_an_image_folder_of_jpegs(tmp_path: Path) -> None:
    cfg = GenConfig(classes=3, train_per_class=5, val_per_class=2, size=16, seed=0)
    root = ensure_generated(cfg, tmp_path)
    for split, per_class in (("train", 5), ("val", 2)):
        classes = sorted(p.name for p in (root / split).iterdir())
        assert classes == ["n00000000", "n00000001", "n00000002"]
        files = sorted((root / split).glob("*/*.JPEG"))
        assert len(files) == 3 * per_class
        with Image.open(files[0]) as image:
            assert image.format == "JPEG" and image.size == (16, 16) and image.mode == "RGB"
    stamp = (root / MANIFEST).stat().st_mtime_ns
    assert ensure_generated(cfg, tmp_path) == root and (root / MANIFEST).stat().st_mtime_ns == stamp


def test_generation_is_safe_when_two_start_at_once(tmp_path: Path) -> None:
    cfg = GenConfig(classes=2, train_per_class=20, val_per_class=2, size=16, seed=1)
    roots: list[Path] = []
    threads = [threading.Thread(target=lambda: roots.append(ensure_generated(cfg, tmp_path)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(roots) == 2 and roots[0] == roots[1]
    assert [p.name for p in tmp_path.iterdir()] == [roots[0].name]  # no temporary folder left
    assert len(list((roots[0] / "train").glob("*/*.JPEG"))) == 40


def test_splits_sizes_items_and_stratified_subset(tmp_path: Path) -> None:
    task = _task(tmp_path, **SMALL_TREE)
    sizes = {k: len(v) for k, v in task.splits.items()}
    assert task.classes == 3 and sizes == {"train": 30, "val": 6, "test": 12}
    item = task.splits["train"][0]
    assert item["x"].shape == (3, 32, 32) and item["x"].dtype == torch.float32
    assert int(item["index"]) == 0 and 0 <= int(item["y"]) < 3
    train, val = task.splits["train"], task.splits["val"]
    assert not set(train.indices) & set(val.indices)
    assert np.bincount(val.targets).tolist() == [2, 2, 2]
    sub = _task(tmp_path, **SMALL_TREE, subset_per_class=4)
    assert np.bincount(sub.splits["train"].targets).tolist() == [4, 4, 4]
    assert set(sub.splits["train"].indices) <= set(train.indices)
    assert np.array_equal(sub.splits["val"].indices, val.indices)
    capped = _task(tmp_path, **SMALL_TREE, max_classes=2)
    assert capped.classes == 2 and len(capped.splits["test"]) == 8


def test_stratified_choice_is_deterministic_by_seed() -> None:
    targets = np.repeat(np.arange(4), 25)
    a_train, a_held = stratified(targets, 5, 10, seed=3)
    b_train, b_held = stratified(targets, 5, 10, seed=3)
    c_train, _ = stratified(targets, 5, 10, seed=4)
    assert np.array_equal(a_train, b_train) and np.array_equal(a_held, b_held)
    assert not np.array_equal(a_train, c_train)
    assert np.bincount(targets[a_train]).tolist() == [10] * 4
    with pytest.raises(ValueError, match="holdout_per_class=25"):
        stratified(targets, 25, 0, seed=0)


def test_top1_top5_against_hand_computed_values() -> None:
    logits = torch.tensor([[0.9, 0.1, 0.0, 0.3, 0.2, 0.5, 0.4],    # label 0: rank 1
                           [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],    # label 2: rank 5
                           [0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],    # label 6: rank 7
                           [0.1, 0.7, 0.2, 0.3, 0.4, 0.5, 0.6]])   # label 6: rank 2
    labels = torch.tensor([0, 2, 6, 6])
    assert topk_correct(logits, labels, (1, 2, 5)) == [1, 2, 3]
    acc = Accuracy()
    acc.update(logits[:2], labels[:2])
    acc.update(logits[2:], labels[2:])
    out = acc.result()
    assert out["top1"] == 0.25 and out["top5"] == 0.75
    expected_nll = float(nn.functional.cross_entropy(logits, labels))
    assert out["nll"] == pytest.approx(expected_nll, rel=1e-6)
    few = torch.tensor([[0.2, 0.1, 0.7]])   # 3 classes: top-5 is top-3
    assert topk_correct(few, torch.tensor([1])) == [0, 1]


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_narrow_resnet_is_a_sequential_of_blocks(norm: str) -> None:
    model = narrow_resnet(classes=5, width=8, stages=3, blocks=2, norm=norm)
    assert isinstance(model, nn.Sequential) and len(model) == 1 + 3 * 2 + 1
    x = torch.randn(2, 3, 32, 32)
    shapes = []
    for block in model:
        x = block(x)
        shapes.append(tuple(x.shape))
    assert shapes[0] == (2, 8, 32, 32) and shapes[-2] == (2, 32, 8, 8) and shapes[-1] == (2, 5)
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert has_bn == (norm == "batch")


def test_resnet50_is_torchvisions_untrained_model() -> None:
    model = resnet50_model(1000).eval()
    assert sum(p.numel() for p in model.parameters()) == 25_557_032
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_full_preset_is_resnet50_with_linear_lr_scaling() -> None:
    spec = resolve(RunSpec(task="imagenet", preset="full", task_params={"data_dir": "/data"}))
    assert spec.task_params["model"] == "resnet50" and spec.task_params["norm"] == "batch"
    assert spec.method_params["optimizer"] == "sgd" and spec.method_params["lr_reference_batch"] == 256
    assert spec.method_params["warmup_steps"] > 0 and spec.method_params["schedule"] == "cosine"


def test_capabilities_follow_model_and_norm() -> None:
    caps = ImageNet.capabilities_for
    assert {"functional", "sequential_blocks", "classification", "sample_index"} <= caps(
        {"model": "resnet", "norm": "group"})
    assert "functional" not in caps({"model": "resnet", "norm": "batch"})
    assert "sequential_blocks" not in caps({"model": "resnet50", "norm": "batch"})
    with pytest.raises(SpecError, match="functional"):
        resolve(RunSpec(task="imagenet", preset="tiny", method="forward_gradient",
                        task_params={"norm": "batch"}))


def test_missing_real_data_names_the_layout(tmp_path: Path, results: Path) -> None:
    for data_dir in ("", str(tmp_path / "nowhere")):
        with pytest.raises(FileNotFoundError, match=r"train/.*val/"):
            _task(tmp_path, preset="full", data_dir=data_dir)
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no val/ folder"):
        _task(tmp_path, preset="full", data_dir=str(tmp_path))
    spec = resolve(RunSpec(task="imagenet", preset="full", task_params={"data_dir": str(tmp_path)}))
    row = Runner(Store(results)).run(spec)
    assert row["status"] == "failed" and "val/" in row["error"] and "FileNotFoundError" in row["error"]


def _run(results: Path, data_dir: Path, method: str, **spec) -> dict:
    task_params = {"data_dir": str(data_dir), **spec.pop("task_params", {})}
    resolved = resolve(RunSpec(task="imagenet", preset="tiny", method=method,
                               task_params=task_params, **spec))
    return Runner(Store(results)).run(resolved)


def test_tiny_runs_through_the_harness(tmp_path: Path, results: Path) -> None:
    row = _run(results, tmp_path, "backprop")
    assert row["status"] == "ok", row.get("traceback")
    assert row["model"] == "resnet2x1-w8-group" and row["gradient_updates"] == 30
    assert row["samples"] == 30 * 32
    assert row["metric_top5"] >= row["metric_top1"] and row["val_top1"] > 0.4  # chance: 0.25
    for method in ("f3", "forward_gradient"):
        other = _run(results, tmp_path, method, budget={"steps": 3})
        assert other["status"] == "ok", other.get("traceback")
        assert other["gradient_updates"] == 3


def test_device_decoding_gives_the_loader_path_s_eval_images(tmp_path: Path) -> None:
    """``decode=device``: loader workers hand over JPEG bytes, ``decode_jpeg`` decodes the batch on
    the run's device (here the CPU; nvJPEG on CUDA) and crops there. The deterministic eval
    images must equal the PIL path's up to the two decoders' rounding."""
    pil = _task(tmp_path, **SMALL_TREE)
    dev = _task(tmp_path, **SMALL_TREE, decode="device")
    loader = dev.eval_loader(dev.splits["test"], 5)
    batch = dev.decoded(next(iter(loader)), "eval")
    reference = torch.stack([pil.splits["test"][i]["x"] for i in range(5)])
    assert batch["x"].shape == reference.shape == (5, 3, 32, 32)
    assert torch.equal(batch["y"], torch.stack([pil.splits["test"][i]["y"] for i in range(5)]))
    assert (batch["x"] - reference).abs().mean() < 0.05  # normalised units; a wrong crop is ~1
    train = dev.on_device(next(iter(dev.train_loader())))
    assert train["x"].shape == (30, 3, 32, 32) and "jpeg" not in train  # one batch of 30 (SMALL_TREE)


def test_device_decoding_feeds_from_loader_workers(tmp_path: Path) -> None:
    """With loader workers, each batch of JPEG bytes crosses a process boundary: a list of one
    tensor per file (read_file's) failed to pickle in the worker ("Bad file descriptor") and the
    training process waited for it forever. Runs in a child process so that a hang fails."""
    script = (
        "import sys, torch\n"
        "sys.path.insert(0, %r)\n"
        "from test_imagenet import _task, SMALL_TREE\n"
        "from pathlib import Path\n"
        "task = _task(Path(%r), batch_size=8, workers=2, decode='device', **SMALL_TREE)\n"
        "for epoch in range(2):\n"
        "    for i, batch in enumerate(task.train_loader()):\n"
        "        assert task.on_device(batch)['x'].shape[1:] == (3, 32, 32)\n"
        "        if epoch == 0 and i == 0: break  # torn down mid-epoch as a budget does\n"
        "print('fed')\n") % (str(Path(__file__).parent), str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "fed" in done.stdout, done.stderr[-2000:]


def test_tiny_learns_with_device_decoding(tmp_path: Path, results: Path) -> None:
    row = _run(results, tmp_path, "backprop", task_params={"decode": "device"})
    assert row["status"] == "ok", row.get("traceback")
    assert row["val_top1"] > 0.4  # chance: 0.25
