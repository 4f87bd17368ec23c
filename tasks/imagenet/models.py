"""Models: torchvision's ResNet-50 (``full``) and a narrow ResNet as an ``nn.Sequential`` of blocks.

The narrow ResNet is laid out for every method of the harness: its top-level children are the
stem, each residual block and the head (pool, flatten, linear), so F³/DFA/DRTP can give every block
its own feedback; with ``norm=group`` or ``none`` it keeps no running statistics, so forward
gradients can evaluate it functionally. It follows the CIFAR ResNets (3×3 stem, no max-pool):
stage s has ``width·2^s`` channels and halves the resolution, except the first.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import resnet50
from torchvision.models.resnet import Bottleneck

NORMS = ("batch", "group", "none")
GROUPS = 8
"""GroupNorm groups (fewer when the channels are fewer), as in Wu & He (2018) for narrow layers."""


def norm_layer(kind: str) -> Callable[[int], nn.Module]:
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "group":
        return lambda c: nn.GroupNorm(min(GROUPS, c), c)
    if kind == "none":
        return lambda c: nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; allowed: {', '.join(NORMS)}")


class BasicBlock(nn.Module):
    """Two 3×3 convolutions around a shortcut (a 1×1 projection where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = norm(c_out)
        self.act = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm(c_out))

    def forward(self, x):
        out = self.act(self.norm1(self.conv1(x)))
        return self.act(self.norm2(self.conv2(out)) + self.shortcut(x))


def narrow_resnet(classes: int, width: int = 16, stages: int = 3, blocks: int = 1,
                  norm: str = "group") -> nn.Sequential:
    """stem, ``stages`` × ``blocks`` residual blocks, head — each a top-level child."""
    make_norm = norm_layer(norm)
    layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                             make_norm(width), nn.ReLU())]
    c_in = width
    for s in range(stages):
        c_out = width * 2 ** s
        for b in range(blocks):
            layers.append(BasicBlock(c_in, c_out, 2 if s > 0 and b == 0 else 1, make_norm))
            c_in = c_out
    layers.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes)))
    if norm == "none":  # start every residual branch at zero so depth does not blow up activations
        for block in layers[1:-1]:
            nn.init.zeros_(block.conv2.weight)
    return nn.Sequential(*layers)


def mlp_classifier(classes: int, image_size: int, hidden: int = 128, layers: int = 2) -> nn.Sequential:
    """A fully connected classifier of blocks (the F³ paper's network for classification):
    flattened image → ``layers`` × (Linear ``hidden``, Tanh) → Linear to the class logits. Each
    block is a top-level child, so feedback methods train it block by block."""
    blocks: list[nn.Module] = [nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size ** 2, hidden), nn.Tanh())]
    blocks += [nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh()) for _ in range(layers - 1)]
    blocks.append(nn.Sequential(nn.Linear(hidden, classes)))
    return nn.Sequential(*blocks)


def resnet50_model(classes: int, norm: str = "batch") -> nn.Module:
    """torchvision's ResNet-50, untrained (``weights=None``); GroupNorm (32 groups) or no norm on
    request (then each residual branch starts at zero)."""
    layer = (lambda c: nn.GroupNorm(32, c)) if norm == "group" else norm_layer(norm)
    model = resnet50(weights=None, num_classes=classes, norm_layer=layer)
    if norm == "none":
        for block in model.modules():
            if isinstance(block, Bottleneck):
                nn.init.zeros_(block.conv3.weight)
    return model
