"""Top-k accuracy and cross-entropy, accumulated over batches."""

from __future__ import annotations

import torch
from torch import nn


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many labels are among the k highest logits, for each k (k is capped at the classes).

    Ties are broken as ``torch.topk`` breaks them; with continuous logits they do not occur.
    """
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels.unsqueeze(1)
    return [int(hits[:, :min(k, logits.shape[1])].any(dim=1).sum()) for k in ks]


class Accuracy:
    """Running top-1/top-5 accuracy and mean cross-entropy over an evaluation split."""

    def __init__(self) -> None:
        self.n = self.top1 = self.top5 = 0
        self.nll = 0.0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        one, five = topk_correct(logits, labels)
        self.top1 += one
        self.top5 += five
        self.n += labels.numel()
        self.nll += float(nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))

    def result(self) -> dict[str, float]:
        if not self.n:
            raise ValueError("no samples were evaluated")
        return {"top1": self.top1 / self.n, "top5": self.top5 / self.n, "nll": self.nll / self.n}
