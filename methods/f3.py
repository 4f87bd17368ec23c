"""F³ (feed-forward with delayed feedback), its relatives DFA and DRTP, and the last-layer-only
baseline LLO, from one machinery.

The model is an ``nn.Sequential`` of blocks (task capability ``sequential_blocks``). Each block's
input is detached in the forward pass, so every gradient is local to one block:

* the last block is trained with its true local gradient (its output feeds the loss);
* every hidden block l gets the gradient of its output seeded with δ_l = B_l s, where B_l is a
  fixed random feedback matrix and s the signal:

  - ``f3``:   the delayed error e^{t-1} of the same sample: ∂loss/∂output stored for each training
    sample (task capability ``sample_index``) when the sample was last seen, one epoch earlier;
    the buffer is updated after every batch. No weight transport, no update locking.
  - ``dfa``:  the current error e^t (direct feedback alignment; update-locked).
  - ``drtp``: minus the target (one-hot for classification), direct random target projection.
  - ``llo``:  no signal: hidden blocks keep their initial weights, only the last block learns
    (the paper's lower baseline that F³'s "gap closed" is measured against, with DRTP).

The authors' setup (Helmholtz-AI-Energy/f3: ``f3/f3_models.py``, ``f3/f3_module.py``,
``f3/training.py``, ``start_training.py``; paper: "Feed-Forward with delayed Feedback"):

* fully connected networks of 1–2 hidden layers of 500–1000 units, **Tanh** after every hidden
  layer, no activation on a regression output (Sigmoid on a classification output);
* the error buffer holds one entry per training sample and **starts from the targets**, so the
  first epoch behaves like DRTP; afterwards it holds each sample's last error (target − output);
* feedback weights drawn like ``nn.Linear``'s kaiming-uniform, U(±1/√(block width));
* Adam, lr 1.5e-4 by default, batch 50, 100–500 epochs; regression and classification tables
  reported separately; "gap reduced by up to 96 %" against DRTP/LLO, not against DFA.

Here: hidden activations are the method's ``activation`` (``tanh``, the paper's; ``task`` keeps
the task's network as built — for backprop on the same network set the task's ``activation``);
``first_epoch="target"`` (the authors') seeds a sample not yet seen with the error a zero
prediction would have, which is minus the target scaled like the loss gradient, so the buffer
keeps one scale from the first epoch on (``zero`` and ``current`` are named options);
``feedback_init="kaiming_uniform"`` is the authors' draw; ``feedback_structure="model"`` uses
the model's declared independent axis (the LTSF MLP is channel-independent: one W × pred_len
feedback matrix maps each channel's error onto that channel's hidden units, as the paper's
per-sample network would) where ``dense`` maps every output onto every hidden unit.

Errors are stored per sample (the batch-mean loss's gradient × batch size) and scaled back by the
batch size when used, so the buffer does not depend on the batch size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from joulebench.harness.context import TrainContext
from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.registry import register_method
from joulebench.methods.optim import OPTIMIZER_PARAMS, make_optimizer, make_schedule

FEEDBACK_INITS = ("kaiming_uniform", "uniform", "gaussian", "rademacher", "orthogonal")
FIRST_EPOCH = ("target", "zero", "current")
SIGNALS = ("delayed_error", "error", "target", "none")
TARGET_KEYS = ("y", "target", "label", "labels")
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
UNBOUNDED = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU)


def feedback_matrix(rows: int, cols: int, init: str, generator: torch.Generator,
                    scale: float = 1.0, device: torch.device | None = None) -> torch.Tensor:
    """A fixed random feedback matrix (rows = block output size, cols = network output size).

    ``kaiming_uniform`` is the authors' draw (U(±1/√rows), as ``nn.Linear`` draws a rows-input
    layer); ``uniform``, ``gaussian`` and ``rademacher`` entries have variance 1/cols;
    ``orthogonal`` has orthonormal columns (rows ≥ cols) or rows, so that it preserves norms.
    """
    if init == "kaiming_uniform":
        out = (torch.rand(rows, cols, generator=generator) * 2 - 1) / math.sqrt(rows)
    elif init == "uniform":
        bound = math.sqrt(3.0 / cols)
        out = (torch.rand(rows, cols, generator=generator) * 2 - 1) * bound
    elif init == "gaussian":
        out = torch.randn(rows, cols, generator=generator) / math.sqrt(cols)
    elif init == "rademacher":
        out = (torch.randint(0, 2, (rows, cols), generator=generator).float() * 2 - 1) / math.sqrt(cols)
    elif init == "orthogonal":
        tall = rows >= cols
        g = torch.randn(max(rows, cols), min(rows, cols), generator=generator)
        q, r = torch.linalg.qr(g)
        q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
        out = q if tall else q.T
    else:
        raise ValueError(f"unknown feedback init {init!r}; allowed: {', '.join(FEEDBACK_INITS)}")
    return (out * scale).to(device) if device is not None else out * scale


def one_line_blocks_problem(model: nn.Module) -> str | None:
    if not isinstance(model, nn.Sequential):
        return (f"the model ({type(model).__name__}) is not an nn.Sequential of blocks; local "
                "feedback methods need the task's 'sequential_blocks' model (e.g. ltsf model=mlp)")
    blocks = list(model.children())
    if len(blocks) < 2:
        return "the model has fewer than two blocks: nothing to train with feedback"
    if not any(p.requires_grad for b in blocks[:-1] for p in b.parameters()):
        return "no hidden block has trainable parameters"
    return None


def set_hidden_activation(model: nn.Sequential, kind: str) -> int:
    """Replace every activation module inside the hidden blocks by ``kind``; returns how many.

    Activations have no parameters, so the optimiser, parameter count and initialisation are
    those of the network as the task built it. The last block is left alone (its activation, if
    any, belongs to the output, as the paper's regression output has none).
    """
    swapped = 0
    for block in list(model.children())[:-1]:
        for name, child in list(block.named_modules()):
            if isinstance(child, (*UNBOUNDED, nn.Tanh)) and name:
                parent = block.get_submodule(name.rpartition(".")[0]) if "." in name else block
                setattr(parent, name.rpartition(".")[2], ACTIVATIONS[kind]())
                swapped += 1
    return swapped


def channel_view(t: torch.Tensor, axis: int | None) -> torch.Tensor:
    """(batch, …) → (batch, channels, features) with the independent axis second (or 1 channel)."""
    if axis is None:
        return t.reshape(t.shape[0], 1, -1)
    return t.movedim(axis, 1).reshape(t.shape[0], t.shape[axis], -1)


def from_channel_view(seed: torch.Tensor, like: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None:
        return seed.reshape(like.shape)
    moved = like.movedim(axis, 1).shape
    return seed.reshape(moved).movedim(1, axis)


class FeedbackTrainer:
    """Per-step machinery shared by F³, DFA, DRTP and LLO; usable without the harness (tests).

    ``signal``: "delayed_error" (F³), "error" (DFA), "target" (DRTP) or "none" (LLO).
    ``n_samples`` sizes the per-sample error buffer (F³ only); ``first_epoch`` says what a sample
    not yet seen uses: "target" (the error of a zero prediction: the buffer starts from the
    targets, the authors' choice), "zero" (no feedback until its error is known) or "current"
    (its current error, as DFA). ``axes``: for each block output, the axis along which the
    model computes independently (channels), or None for one dense feedback matrix.
    """

    def __init__(self, model: nn.Sequential, signal: str, *, init: str = "kaiming_uniform",
                 scale: float = 1.0, seed: int = 0, n_samples: int | None = None,
                 first_epoch: str = "target", axes: tuple[int | None, ...] | None = None) -> None:
        problem = one_line_blocks_problem(model)
        if problem:
            raise ValueError(problem)
        if signal not in SIGNALS:
            raise ValueError(f"unknown signal {signal!r}")
        if signal == "delayed_error" and not n_samples:
            raise ValueError("F³ needs the number of training samples for its error buffer")
        if first_epoch not in FIRST_EPOCH:
            raise ValueError(f"unknown first_epoch {first_epoch!r}; allowed: {', '.join(FIRST_EPOCH)}")
        self.model, self.signal, self.init, self.scale = model, signal, init, scale
        self.first_epoch = first_epoch
        self.blocks = list(model.children())
        if axes is not None and len(axes) != len(self.blocks):
            raise ValueError(f"axes names {len(axes)} blocks, the model has {len(self.blocks)}")
        self.axes = tuple(axes) if axes is not None else (None,) * len(self.blocks)
        self.generator = torch.Generator().manual_seed(7919 * seed + 17)
        self.n_samples = n_samples
        self.feedback: list[torch.Tensor] | None = None
        self.buffer: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None
        self.outputs: list[torch.Tensor] = []
        self.active = False
        self.zero_output: torch.Tensor | None = None
        self.want_zero_output = False
        self.handles = []
        for block in self.blocks:
            self.handles.append(block.register_forward_pre_hook(self._detach_input))
            self.handles.append(block.register_forward_hook(self._keep_output))

    # -- hooks ------------------------------------------------------------------------------
    def _detach_input(self, module, args):
        if not self.active:
            return None
        return tuple(a.detach() if torch.is_tensor(a) else a for a in args)

    def _keep_output(self, module, args, out):
        if self.want_zero_output and module is self.blocks[-1]:
            self.zero_output = torch.zeros_like(out).requires_grad_(True)
            return self.zero_output
        if self.active:
            if not torch.is_tensor(out):
                raise TypeError(f"block {type(module).__name__} returns {type(out).__name__}; "
                                "feedback methods need blocks that return one tensor")
            self.outputs.append(out)
        return None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    # -- state ------------------------------------------------------------------------------
    def _lazy_init(self, outputs: list[torch.Tensor]) -> None:
        last = outputs[-1]
        out_axis = self.axes[-1]
        out_dim = channel_view(last, out_axis).shape[2]
        self.feedback = []
        for o, axis in zip(outputs[:-1], self.axes[:-1], strict=True):
            view = channel_view(o, axis)
            if axis is not None and view.shape[1] != channel_view(last, out_axis).shape[1]:
                raise ValueError(f"block output {tuple(o.shape)} has {view.shape[1]} channels on "
                                 f"axis {axis}, the model output {tuple(last.shape)} has a different "
                                 "number: use feedback_structure=dense")
            self.feedback.append(feedback_matrix(view.shape[2], out_dim, self.init, self.generator,
                                                 self.scale, last.device))
        if self.signal == "delayed_error":
            flat = last.numel() // last.shape[0]
            self.buffer = torch.zeros(self.n_samples, flat, device=last.device)
            self.seen = torch.zeros(self.n_samples, dtype=torch.bool, device=last.device)

    def _target_signal(self, batch: dict, out: torch.Tensor) -> torch.Tensor:
        key = next((k for k in TARGET_KEYS if k in batch), None)
        if key is None:
            raise KeyError(f"DRTP needs the target in the batch under one of {TARGET_KEYS}")
        y = batch[key]
        if y.shape == out.shape:
            target = y.to(out.dtype)
        elif y.dtype in (torch.int64, torch.int32) and y.shape == out.shape[:1] and out.dim() == 2:
            target = nn.functional.one_hot(y.long(), out.shape[1]).to(out.dtype)
        else:
            raise ValueError(f"DRTP cannot turn a target of shape {tuple(y.shape)} into a signal "
                             f"for an output of shape {tuple(out.shape)}")
        return -target.reshape(out.shape[0], -1)

    def zero_prediction_error(self, loss_fn, batch: dict) -> torch.Tensor:
        """Per-sample ∂loss/∂output at output 0: minus the target, on the loss gradient's scale
        (MSE: −2y/D; cross-entropy: 1/C − one-hot). One extra forward pass."""
        self.want_zero_output = True
        try:
            loss = loss_fn(self.model, batch)
        finally:
            self.want_zero_output = False
        zero, self.zero_output = self.zero_output, None
        size = zero.shape[0]
        return torch.autograd.grad(loss, zero)[0].reshape(size, -1) * size

    def _delayed_signal(self, loss_fn, batch: dict, error: torch.Tensor) -> torch.Tensor:
        index = batch["index"].to(error.device).long()
        signal = self.buffer[index]
        fresh = ~self.seen[index]
        if self.first_epoch == "zero" or not bool(fresh.any()):
            return signal
        first = error if self.first_epoch == "current" else self.zero_prediction_error(loss_fn, batch)
        return torch.where(fresh.unsqueeze(1), first, signal)

    def seeds(self, signal: torch.Tensor, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """δ_l = B_l s for every hidden block output, per channel when the model is channel-wise."""
        size = signal.shape[0]
        last = outputs[-1]
        s = channel_view(signal.reshape(last.shape), self.axes[-1])
        return [from_channel_view(s @ fb.T, o, axis) / size
                for fb, o, axis in zip(self.feedback, outputs[:-1], self.axes[:-1], strict=True)]

    # -- one step ---------------------------------------------------------------------------
    def _forward(self, loss_fn, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self.outputs = []
        self.active = True
        try:
            loss = loss_fn(self.model, batch)
        finally:
            self.active = False
        outputs, self.outputs = self.outputs, []
        if len(outputs) != len(self.blocks):
            raise RuntimeError(f"expected one output per block ({len(self.blocks)}), got "
                               f"{len(outputs)}: the task must call the model once per loss")
        return loss, outputs

    def step(self, loss_fn, batch: dict) -> torch.Tensor:
        """Forward pass, local gradients into ``.grad`` of every block's parameters, buffer update.

        ``loss_fn(model, batch)`` must run the model once. Returns the (detached) loss.
        """
        loss, outputs = self._forward(loss_fn, batch)
        if self.feedback is None:
            self._lazy_init(outputs)
        if self.signal == "none":
            loss.backward()
            return loss.detach()
        last = outputs[-1]
        size = last.shape[0]
        error = torch.autograd.grad(loss, last, retain_graph=True)[0].reshape(size, -1) * size
        if self.signal == "error":
            signal = error
        elif self.signal == "target":
            signal = self._target_signal(batch, last)
        else:
            signal = self._delayed_signal(loss_fn, batch, error)
        seeds = self.seeds(signal.detach(), outputs)
        roots = [loss] + [o for o in outputs[:-1] if o.requires_grad]
        grads = [None] + [s for s, o in zip(seeds, outputs[:-1], strict=True) if o.requires_grad]
        torch.autograd.backward(roots, grads)
        if self.signal == "delayed_error":
            index = batch["index"].to(error.device).long()
            self.buffer[index] = error.detach()
            self.seen[index] = True
        return loss.detach()


class _FeedbackMethod(Method):
    """Shared parameters and training loop (not registered itself)."""

    signal = "error"
    params = {
        **OPTIMIZER_PARAMS,
        "activation": Param("tanh", choices=("tanh", "task"),
                            help="hidden activations: tanh (the papers'), or the task's network as built"),
        "feedback_init": Param("kaiming_uniform", choices=FEEDBACK_INITS),
        "feedback_scale": Param(1.0, low=1e-3, high=1e3, log=True),
        "feedback_structure": Param("model", choices=("model", "dense"),
                                    help="model: one matrix per independent channel when the model "
                                         "declares independent_axes; dense: all outputs to all units"),
        "clip_norm": Param(0.0, low=0.0, high=100.0, help="0: off"),
    }
    requires = frozenset({"sequential_blocks"})

    def check_model(self, model: nn.Module) -> str | None:
        return one_line_blocks_problem(model)

    def axes(self, model: nn.Module) -> tuple[int | None, ...] | None:
        if self.hp.feedback_structure == "dense":
            return None
        return getattr(model, "independent_axes", None)

    def trainer(self, ctx: TrainContext) -> FeedbackTrainer:
        return FeedbackTrainer(ctx.model, self.signal, init=self.hp.feedback_init,
                               scale=self.hp.feedback_scale, seed=ctx.spec.seed,
                               axes=self.axes(ctx.model))

    def prepare(self, ctx: TrainContext) -> None:
        """The paper's network: bounded hidden activations unless the task's are asked for."""
        kind = self.hp.activation
        swapped = set_hidden_activation(ctx.model, kind) if kind != "task" else 0
        ctx.record(hidden_activation=kind, activations_replaced=swapped)

    def train(self, ctx: TrainContext) -> None:
        if ctx.dist.world_size > 1:
            raise RuntimeError(f"{self.name} runs in a single process (world_size 1)")
        self.prepare(ctx)
        trainer = self.trainer(ctx)
        params = [p for p in ctx.model.parameters() if p.requires_grad]
        opt = make_optimizer(params, self.hp, ctx.global_batch)
        schedule = make_schedule(opt, self.hp, ctx.planned_steps, ctx.steps_per_epoch)
        ctx.record(feedback_signal=self.signal, blocks=len(trainer.blocks),
                   feedback_structure="dense" if trainer.axes[-1] is None else "per_channel")
        try:
            for batch in ctx.batches():
                opt.zero_grad(set_to_none=True)
                loss = trainer.step(ctx.loss, batch)
                if self.hp.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, self.hp.clip_norm)
                opt.step()
                if schedule is not None:
                    schedule.step()
                ctx.step(loss, batch)
        finally:
            trainer.remove()


@register_method
class F3(_FeedbackMethod):
    name = "f3"
    description = ("F³: hidden blocks learn from each sample's delayed (previous-epoch) error "
                   "through fixed random feedback; the last block from its true local gradient")
    signal = "delayed_error"
    params = {**_FeedbackMethod.params,
              "first_epoch": Param("target", choices=FIRST_EPOCH,
                                   help="signal of a sample not yet seen: the error of a zero "
                                        "prediction (from the target, the authors'), none, or "
                                        "its current error")}
    requires = frozenset({"sequential_blocks", "sample_index"})

    def trainer(self, ctx: TrainContext) -> FeedbackTrainer:
        return FeedbackTrainer(ctx.model, self.signal, init=self.hp.feedback_init,
                               scale=self.hp.feedback_scale, seed=ctx.spec.seed,
                               n_samples=len(ctx.task.train_dataset()),
                               first_epoch=self.hp.first_epoch, axes=self.axes(ctx.model))


@register_method
class DFA(_FeedbackMethod):
    name = "dfa"
    description = "Direct feedback alignment: the current output error through fixed random feedback"
    signal = "error"


@register_method
class DRTP(_FeedbackMethod):
    name = "drtp"
    description = "Direct random target projection: minus the target through fixed random feedback"
    signal = "target"


@register_method
class LLO(_FeedbackMethod):
    """Last layer only: the lower baseline of the F³ paper (hidden blocks stay as initialised).

    It shares the family's network (``activation``) so that "gap closed" compares like with like;
    the feedback parameters are declared by the family and have nothing to act on here, so they
    are not LLO's: it keeps only the optimiser, activation and clipping parameters.
    """

    name = "llo"
    description = "Last layer only: hidden blocks keep their random initial weights"
    signal = "none"
    params = {k: v for k, v in _FeedbackMethod.params.items()
              if not k.startswith("feedback_")}

    def trainer(self, ctx: TrainContext) -> FeedbackTrainer:
        return FeedbackTrainer(ctx.model, self.signal, seed=ctx.spec.seed)
