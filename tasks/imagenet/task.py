"""The ImageNet task: image classification in the ImageFolder layout, top-1/top-5 accuracy.

``full`` is the ResNet-50 setup on ILSVRC-2012 read from the user's folder; ``tiny`` and ``small``
generate a tree of JPEG textures in the same layout (``generate.py``) and train a narrow ResNet
through the same ImageFolder, decoding and augmentation code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from joulebench.harness.params import Param
from joulebench.harness.registry import register_task
from joulebench.harness.task import WORKERS, Batch, Preset, Task
from joulebench.tasks.imagenet import data
from joulebench.tasks.imagenet.generate import GenConfig, ensure_generated
from joulebench.tasks.imagenet.metrics import Accuracy
from joulebench.tasks.imagenet.models import NORMS, mlp_classifier, narrow_resnet, resnet50_model

# First settings, not tuned: at small (3 epochs) DFA reaches about 0.28 test top-1 and F³ 0.18
# (chance 0.1; their loss starts to fall after ~120 steps); forward gradients stay at chance.
FEEDBACK_LR = {"f3": {"lr": 1e-2}, "dfa": {"lr": 1e-2}, "drtp": {"lr": 1e-2},
               "forward_gradient": {"lr": 1e-4}}


RESNET = {"model": ("resnet",)}
MLP = {"model": ("mlp",)}


@register_task
class ImageNet(Task):
    name = "imagenet"
    description = "ImageNet (ILSVRC-2012) classification, ImageFolder layout; ResNet-50 at full (top-1)"
    params = {
        "dataset": Param("generated", choices=("generated", "imagenet"),
                         help="generated: a JPEG texture tree written once to a cache; imagenet: data_dir"),
        "data_dir": Param("", help="imagenet: folder with train/ and val/; generated: where to cache "
                                   "the tree (empty: $JOULEBENCH_CACHE or ~/.cache/joulebench)"),
        "gen_classes": Param(10, low=2, high=1000, help="generated: classes"),
        "gen_train_per_class": Param(430, low=2, high=100_000, help="generated: images in train/"),
        "gen_val_per_class": Param(50, low=1, high=100_000, help="generated: images in val/ (test)"),
        "data_seed": Param(0, help="seed of the generated images and of the held-out/subset choice"),
        "image_size": Param(32, low=8, high=1024, help="crop side fed to the model"),
        "max_classes": Param(0, low=0, high=100_000, help="use the first N class folders; 0: all"),
        "holdout_per_class": Param(30, low=1, high=100_000,
                                   help="train/ images per class held out as the val split"),
        "subset_per_class": Param(0, low=0, high=100_000,
                                  help="train on N images per class (stratified by data_seed); 0: all"),
        "crop_scale_min": Param(0.08, low=0.01, high=1.0, help="RandomResizedCrop smallest area share"),
        "model": Param("resnet", choices=("resnet", "resnet50", "mlp"),
                       help="resnet: narrow, nn.Sequential of blocks; resnet50: torchvision's; "
                            "mlp: fully connected Tanh blocks (the F³ paper's classifier)"),
        "width": Param(16, low=1, high=1024, help="resnet: channels of the first stage", applies=RESNET),
        "stages": Param(3, low=1, high=6, help="resnet: stages (each after the first halves the size)",
                        applies=RESNET),
        "blocks": Param(1, low=1, high=16, help="resnet: residual blocks per stage", applies=RESNET),
        "norm": Param("group", choices=NORMS, applies={"model": ("resnet", "resnet50")},
                      help="batch keeps running statistics (no forward gradients); group; none"),
        "hidden": Param(128, low=1, high=65536, help="mlp: units per hidden layer", applies=MLP),
        "hidden_layers": Param(2, low=1, high=16, help="mlp: hidden layers", applies=MLP),
        "label_smoothing": Param(0.0, low=0.0, high=0.5),
        "batch_size": Param(64, low=1, high=65536, help="per rank"),
        "eval_batch_size": Param(256, low=1, high=65536),
        "workers": WORKERS,
        "decode": Param("loader", choices=("loader", "device"),
                        help="loader: PIL decodes and crops in the loader workers; device: the workers "
                             "only read JPEG bytes and torchvision.io.decode_jpeg decodes each batch on the "
                             "run's device (nvJPEG on CUDA), crops there too"),
    }
    presets = {
        "tiny": Preset(
            params={"gen_classes": 4, "gen_train_per_class": 60, "gen_val_per_class": 15,
                    "holdout_per_class": 10, "image_size": 32, "crop_scale_min": 0.35,
                    "width": 8, "stages": 2, "batch_size": 32, "workers": 0},
            budget={"steps": 30}, eval_every=15, target=0.45, timeout_s=120,
            method_defaults={"backprop": {"lr": 3e-3}, **FEEDBACK_LR},
            description="4 generated texture classes, 200 train JPEGs at 32 px, ResNet 2×1 w8; seconds"),
        "small": Preset(
            params={"gen_classes": 10, "gen_train_per_class": 430, "gen_val_per_class": 50,
                    "holdout_per_class": 30, "image_size": 32, "crop_scale_min": 0.35,
                    "width": 16, "stages": 3, "batch_size": 64},
            budget={"epochs": 3}, target=0.7, timeout_s=1800,
            method_defaults={"backprop": {"lr": 3e-3}, **FEEDBACK_LR},
            description="10 generated texture classes, 4,000 train JPEGs at 32 px, ResNet 3×1 w16; minutes"),
        "full": Preset(
            params={"dataset": "imagenet", "image_size": 224, "model": "resnet50", "norm": "batch",
                    "holdout_per_class": 10, "crop_scale_min": 0.08, "batch_size": 256},
            budget={"epochs": 90}, target=0.759, timeout_s=4 * 24 * 3600,
            # Goyal et al. (2017): lr 0.1 per 256 images of global batch (batch_size × ranks) and a
            # linear warm-up (2,500 steps: half an epoch on one rank, four epochs on 8 × 256)
            method_defaults={"backprop": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                                          "weight_decay": 1e-4, "schedule": "cosine",
                                          "warmup_steps": 2500, "lr_reference_batch": 256}},
            description="ILSVRC-2012 from data_dir, ResNet-50 at 224 px, SGD 0.1 per 256 with warm-up, 90 epochs"),
    }
    metrics = {"top1": True, "top5": True, "nll": False}
    """top1/top5: share of images whose label is among the 1/5 highest logits; nll: cross-entropy."""
    primary_metric = "top1"
    capabilities = frozenset({"sample_index", "classification"})

    @classmethod
    def capabilities_for(cls, hp) -> frozenset[str]:
        """The narrow ResNet is a Sequential of blocks; without BatchNorm the model is functional."""
        extra = set()
        if hp.get("model", "resnet") in ("resnet", "mlp"):
            extra.add("sequential_blocks")
        if hp.get("norm", "group") != "batch":
            extra.add("functional")
        return cls.capabilities | extra

    data_params = ("data_dir",)

    @classmethod
    def data_files(cls, hp, preset):
        if hp.get("dataset") != "imagenet" or not hp.get("data_dir"):
            return []
        return [Path(hp["data_dir"]).expanduser()]

    # -- data ---------------------------------------------------------------------------------
    def root(self) -> Path:
        hp = self.hp
        if hp.dataset == "imagenet":
            return data.locate(hp.data_dir)
        cfg = GenConfig(classes=hp.gen_classes, train_per_class=hp.gen_train_per_class,
                        val_per_class=hp.gen_val_per_class, size=hp.image_size, seed=hp.data_seed)
        return ensure_generated(cfg, hp.data_dir)

    def setup(self) -> None:
        hp = self.hp
        train_folder, val_folder = data.folders(self.root(), hp.max_classes)
        self.classes = len(train_folder.classes)
        train_idx, held_idx = data.stratified(train_folder.targets, hp.holdout_per_class,
                                              hp.subset_per_class, hp.data_seed)
        on_device = hp.decode == "device"
        evaluation = None if on_device else data.eval_transform(hp.image_size)
        training = None if on_device else data.train_transform(hp.image_size, hp.crop_scale_min)
        self.splits = {
            "train": data.Split(train_folder, train_idx, training),
            "val": data.Split(train_folder, held_idx, evaluation),
            "test": data.Split(val_folder, range(len(val_folder)), evaluation),
        }
        self.decoders = ({"train": data.DeviceDecode(hp.image_size, hp.crop_scale_min, self.device),
                          "eval": data.DeviceDecode(hp.image_size, None, self.device)} if on_device else {})

    def loader_options(self, train: bool = True) -> dict:
        options = super().loader_options(train)
        if self.hp.decode == "device":
            options["collate_fn"] = data.collate_jpegs
        return options

    def on_device(self, batch: Batch) -> Batch:
        return self.decoded(batch, "train")

    def decoded(self, batch: Batch, which: str) -> Batch:
        if "jpeg" not in batch:
            return batch
        rest = {k: v for k, v in batch.items() if k != "jpeg"}
        return {**rest, "x": self.decoders[which](batch["jpeg"])}

    def train_dataset(self) -> Dataset:
        return self.splits["train"]

    def data_in_memory(self) -> bool:
        return False  # every image is read and decoded from its JPEG file


    # -- model, loss, evaluation ----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        hp = self.hp
        if hp.model == "resnet50":
            return resnet50_model(self.classes, hp.norm)
        if hp.model == "mlp":
            return mlp_classifier(self.classes, hp.image_size, hp.hidden, hp.hidden_layers)
        return narrow_resnet(self.classes, hp.width, hp.stages, hp.blocks, hp.norm)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return nn.functional.cross_entropy(model(batch["x"]), batch["y"],
                                           label_smoothing=self.hp.label_smoothing)

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        loader = self.eval_loader(self.splits[split], self.hp.eval_batch_size)
        acc = Accuracy()
        for batch in loader:
            batch = self.decoded(batch, "eval")
            acc.update(model(batch["x"].to(self.device, non_blocking=True)),
                       batch["y"].to(self.device))
        return acc.result()

    def model_name(self) -> str:
        hp = self.hp
        if hp.model == "resnet50":
            return "resnet50" + ("" if hp.norm == "batch" else f"-{hp.norm}")
        if hp.model == "mlp":
            return f"mlp{hp.hidden_layers}x{hp.hidden}"
        return f"resnet{hp.stages}x{hp.blocks}-w{hp.width}-{hp.norm}"
