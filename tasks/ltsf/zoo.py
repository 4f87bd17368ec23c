"""The LTSF model zoo: model name → builder. Add a model by decorating its builder here."""

from __future__ import annotations

from typing import Callable, Mapping

from torch import nn

Builder = Callable[[Mapping, int], nn.Module]
"""builder(task hyper-parameters, number of channels) → model taking (x, x_mark, y_mark)."""
MODELS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        MODELS[name] = builder
        return builder

    return wrap


@register_model("dlinear")
def _dlinear(hp: Mapping, channels: int) -> nn.Module:
    from joulebench.tasks.ltsf.models import DLinear

    return DLinear(hp["seq_len"], hp["pred_len"], channels, hp["kernel_size"], hp["individual"])


@register_model("transformer")
def _transformer(hp: Mapping, channels: int) -> nn.Module:
    from joulebench.tasks.ltsf.models import VanillaTransformer

    return VanillaTransformer(hp["seq_len"], hp["label_len"], hp["pred_len"], channels,
                              hp["d_model"], hp["n_heads"], hp["e_layers"], hp["d_layers"],
                              hp["d_ff"], hp["dropout"])
