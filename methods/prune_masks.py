"""Unstructured magnitude pruning: which weights are prunable, and the masks that keep them zero.

The prunable set is every weight matrix the pruning study prunes: Linear and Conv weights *and*
the attention projections, including ``nn.MultiheadAttention``'s packed ``in_proj_weight`` (or its
separate q/k/v weights) and its ``out_proj``. Only the model's output projection (the last
Linear/Conv it registers) and modules with a path component named in ``exclude`` are spared. Biases, norms and
embeddings' position tables are not prunable.

Masks are plain tensors applied to the parameters in place (after every optimiser step and to
the gradients before it), not ``torch.nn.utils.prune`` hooks: ``nn.MultiheadAttention`` reads its
weights directly, bypassing the forward hooks such masks rely on, which is why attention was left
dense before (density 0.1 asked, 0.62 actual on the LTSF transformer).
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")

Target = tuple[nn.Module, str]
"""(module, parameter name): one prunable weight tensor."""


def exclude_words(exclude: str) -> list[str]:
    return [w.strip() for w in exclude.split(",") if w.strip()]


def excluded(name: str, words: list[str]) -> bool:
    """Whether a module path has a component equal to one of ``words`` (whole components:
    ``head`` spares PatchTST's ``head``, not a decoder's ``multihead_attn``)."""
    return any(part in words for part in name.split("."))


def output_layer(model: nn.Module) -> str | None:
    """The name of the last Linear/Conv the model registers: its output projection."""
    names = [n for n, m in model.named_modules() if isinstance(m, LAYERS)]
    return names[-1] if names else None


def prunable_weights(model: nn.Module, exclude: str) -> dict[str, Target]:
    """``"<module>.<param>" → (module, param)`` for every prunable weight (see the module doc)."""
    words, last = exclude_words(exclude), output_layer(model)
    out: dict[str, Target] = {}
    for name, module in model.named_modules():
        if name == last or excluded(name, words):
            continue
        if isinstance(module, LAYERS):
            out[f"{name}.weight"] = (module, "weight")
        elif isinstance(module, nn.MultiheadAttention):
            for attr in ATTENTION_WEIGHTS:
                if getattr(module, attr, None) is not None:
                    out[f"{name}.{attr}"] = (module, attr)
    return out


def tensor(target: Target) -> torch.Tensor:
    module, attr = target
    return getattr(module, attr)


class Masks:
    """Binary masks over the prunable weights, kept through fine-tuning."""

    def __init__(self, targets: dict[str, Target]) -> None:
        self.targets = targets
        self.masks = {name: torch.ones_like(tensor(t), dtype=torch.bool) for name, t in targets.items()}

    def prune_to(self, density: float) -> None:
        """Global magnitude pruning: keep exactly ``round(density × n)`` of the n prunable weights
        (the largest in absolute value over all targets together)."""
        values = torch.cat([tensor(t).detach().abs().flatten() * self.masks[n].flatten()
                            for n, t in self.targets.items()])
        keep = max(int(round(density * values.numel())), 1)
        chosen = torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
        chosen[torch.topk(values, keep, sorted=False).indices] = True
        offset = 0
        for name, target in self.targets.items():
            n = tensor(target).numel()
            self.masks[name] = chosen[offset:offset + n].view_as(tensor(target))
            offset += n
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (after an optimiser step: Adam's momentum would revive them)."""
        for name, target in self.targets.items():
            tensor(target).mul_(self.masks[name])

    @torch.no_grad()
    def mask_grads(self) -> None:
        """Zero the pruned weights' gradients, so optimiser state never accrues for them."""
        for name, target in self.targets.items():
            grad = tensor(target).grad
            if grad is not None:
                grad.mul_(self.masks[name])

    def density(self) -> float:
        """Non-zero share over the prunable set, as the weights are now."""
        total = sum(tensor(t).numel() for t in self.targets.values())
        nonzero = sum(int(torch.count_nonzero(tensor(t))) for t in self.targets.values())
        return nonzero / max(total, 1)


def weight_counts(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters) over the whole model."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(int(torch.count_nonzero(p)) for p in params)
