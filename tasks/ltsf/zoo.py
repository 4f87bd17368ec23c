"""The LTSF model zoo: model name → builder. Add a model by decorating its builder here."""

from __future__ import annotations

from collections.abc import Callable, Mapping

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


@register_model("patchtst")
def _patchtst(hp: Mapping, channels: int) -> nn.Module:
    from joulebench.tasks.ltsf.patchtst import PatchTST

    return PatchTST(hp["seq_len"], hp["pred_len"], channels, hp["patch_len"], hp["stride"],
                    hp["d_model"], hp["n_heads"], hp["e_layers"], hp["d_ff"], hp["dropout"],
                    hp["head_dropout"], hp["revin"])


@register_model("autoformer")
def _autoformer(hp: Mapping, channels: int) -> nn.Module:
    from joulebench.tasks.ltsf.autoformer import Autoformer

    return Autoformer(hp["seq_len"], hp["label_len"], hp["pred_len"], channels, hp["d_model"],
                      hp["n_heads"], hp["e_layers"], hp["d_layers"], hp["d_ff"], hp["dropout"],
                      hp["kernel_size"], hp["factor"])


@register_model("recycle")
def _recycle(hp: Mapping, channels: int) -> nn.Module:
    """``hp["cycle_len"]`` and ``hp["use_day_types"]`` are resolved by the task before building."""
    from joulebench.tasks.ltsf.recycle import ReCycle

    return ReCycle(hp["seq_len"], hp["pred_len"], channels, hp["cycle_len"], hp["rhp_cycles"],
                   hp["use_day_types"], hp["d_model"], hp["n_heads"], hp["e_layers"],
                   hp["d_layers"], hp["d_ff"], hp["dropout"], profile=hp["rhp"],
                   tokens=hp["recycle_tokens"], window_norm=hp["recycle_window_norm"],
                   zero_init=hp["recycle_zero_init"])


@register_model("rhp")
def _rhp(hp: Mapping, channels: int) -> nn.Module:
    from joulebench.tasks.ltsf.recycle import RHPForecast

    return RHPForecast(hp["seq_len"], hp["pred_len"], hp["cycle_len"], hp["rhp_cycles"],
                       hp["use_day_types"], profile=hp["rhp"])


@register_model("last_value")
def _last_value(hp: Mapping, channels: int) -> nn.Module:
    from joulebench.tasks.ltsf.baselines import RepeatLast

    return RepeatLast(hp["pred_len"])


@register_model("seasonal_naive")
def _seasonal_naive(hp: Mapping, channels: int) -> nn.Module:
    from joulebench.tasks.ltsf.baselines import SeasonalNaive

    return SeasonalNaive(hp["seq_len"], hp["pred_len"], hp["cycle_len"])


class _Transpose(nn.Module):
    """Swaps time and channel axes inside an ``nn.Sequential`` (used by the ``mlp`` model)."""

    def forward(self, x):
        return x.transpose(1, 2)


class SequentialForecaster(nn.Sequential):
    """An ``nn.Sequential`` of blocks that takes the LTSF call ``(x, x_mark, y_mark)``.

    The blocks see only ``x``; each block's output is the next block's input, so local-learning
    methods (F³, DFA, DRTP, LLO: task capability ``sequential_blocks``) can train block by block.
    ``independent_axes`` names, per block output, the axis along which the model computes
    independently (the channels): feedback methods then map each channel's error onto that
    channel's hidden units only.
    """

    def __init__(self, *blocks: nn.Module, independent_axes: tuple[int | None, ...] | None = None):
        super().__init__(*blocks)
        self.independent_axes = independent_axes

    def forward(self, x, x_mark=None, y_mark=None):
        for block in self:
            x = block(x)
        return x


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


@register_model("mlp")
def _mlp(hp: Mapping, channels: int) -> nn.Module:
    """Channel-independent MLP over time: seq_len → d_ff (``activation``) × e_layers → pred_len.

    Hidden block outputs are (batch, channel, d_ff), the last block's (batch, pred_len, channel).
    """
    width, hidden = hp["d_ff"], max(int(hp["e_layers"]), 1)
    act = ACTIVATIONS[hp["activation"]]
    blocks = [nn.Sequential(_Transpose(), nn.Linear(hp["seq_len"], width), act())]
    blocks += [nn.Sequential(nn.Linear(width, width), act()) for _ in range(hidden - 1)]
    blocks.append(nn.Sequential(nn.Linear(width, hp["pred_len"]), _Transpose()))
    return SequentialForecaster(*blocks, independent_axes=(1,) * hidden + (2,))
