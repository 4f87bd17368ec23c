"""F³ (feed-forward with delayed feedback) and its relatives DFA and DRTP, from one machinery.

The model is an ``nn.Sequential`` of blocks (task capability ``sequential_blocks``). Each block's
input is detached in the forward pass, so every gradient is local to one block:

* the last block is trained with its true local gradient (its output feeds the loss);
* every hidden block l gets the gradient of its output seeded with δ_l = B_l s, where B_l is a
  fixed random feedback matrix (block output size × network output size) and s the signal:

  - ``f3``:   the delayed error e^{t-1} of the same sample: ∂loss/∂output stored for each training
    sample (task capability ``sample_index``) when the sample was last seen, one epoch earlier;
    the buffer is updated after every batch. No weight transport, no update locking.
  - ``dfa``:  the current error e^t (direct feedback alignment; update-locked).
  - ``drtp``: minus the target (one-hot for classification), direct random target projection.

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

FEEDBACK_INITS = ("uniform", "gaussian", "rademacher", "orthogonal")
TARGET_KEYS = ("y", "target", "label", "labels")


def feedback_matrix(rows: int, cols: int, init: str, generator: torch.Generator,
                    scale: float = 1.0, device: torch.device | None = None) -> torch.Tensor:
    """A fixed random feedback matrix (rows = block output size, cols = network output size).

    ``uniform``, ``gaussian`` and ``rademacher`` entries have variance 1/cols; ``orthogonal`` has
    orthonormal columns (rows ≥ cols) or rows, so that it preserves the norm of what it maps.
    """
    if init == "uniform":
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


class FeedbackTrainer:
    """Per-step machinery shared by F³, DFA and DRTP; usable without the harness (tests).

    ``signal``: "delayed_error" (F³), "error" (DFA) or "target" (DRTP). ``n_samples`` sizes the
    per-sample error buffer (F³ only); ``first_epoch`` says what a sample not yet seen uses:
    "zero" (no feedback until its error is known) or "current" (its current error, as DFA).
    """

    def __init__(self, model: nn.Sequential, signal: str, *, init: str = "uniform",
                 scale: float = 1.0, seed: int = 0, n_samples: int | None = None,
                 first_epoch: str = "zero") -> None:
        problem = one_line_blocks_problem(model)
        if problem:
            raise ValueError(problem)
        if signal not in {"delayed_error", "error", "target"}:
            raise ValueError(f"unknown signal {signal!r}")
        if signal == "delayed_error" and not n_samples:
            raise ValueError("F³ needs the number of training samples for its error buffer")
        self.model, self.signal, self.init, self.scale = model, signal, init, scale
        self.first_epoch = first_epoch
        self.blocks = list(model.children())
        self.generator = torch.Generator().manual_seed(7919 * seed + 17)
        self.n_samples = n_samples
        self.feedback: list[torch.Tensor] | None = None
        self.buffer: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None
        self.outputs: list[torch.Tensor] = []
        self.active = False
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
        if self.active:
            if not torch.is_tensor(out):
                raise TypeError(f"block {type(module).__name__} returns {type(out).__name__}; "
                                "feedback methods need blocks that return one tensor")
            self.outputs.append(out)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    # -- state ------------------------------------------------------------------------------
    def _lazy_init(self, outputs: list[torch.Tensor]) -> None:
        batch = outputs[-1].shape[0]
        out_dim = outputs[-1].numel() // batch
        device = outputs[-1].device
        self.feedback = [feedback_matrix(o.numel() // batch, out_dim, self.init, self.generator,
                                         self.scale, device) for o in outputs[:-1]]
        if self.signal == "delayed_error":
            self.buffer = torch.zeros(self.n_samples, out_dim, device=device)
            self.seen = torch.zeros(self.n_samples, dtype=torch.bool, device=device)

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

    # -- one step ---------------------------------------------------------------------------
    def step(self, loss_fn, batch: dict) -> torch.Tensor:
        """Forward pass, local gradients into ``.grad`` of every block's parameters, buffer update.

        ``loss_fn(model, batch)`` must run the model once. Returns the (detached) loss.
        """
        self.outputs = []
        self.active = True
        try:
            loss = loss_fn(self.model, batch)
        finally:
            self.active = False
        outputs = self.outputs
        self.outputs = []
        if len(outputs) != len(self.blocks):
            raise RuntimeError(f"expected one output per block ({len(self.blocks)}), got "
                               f"{len(outputs)}: the task must call the model once per loss")
        if self.feedback is None:
            self._lazy_init(outputs)
        last = outputs[-1]
        size = last.shape[0]
        error = torch.autograd.grad(loss, last, retain_graph=True)[0].reshape(size, -1) * size
        if self.signal == "error":
            signal = error
        elif self.signal == "target":
            signal = self._target_signal(batch, last)
        else:
            index = batch["index"].to(error.device).long()
            signal = self.buffer[index]
            if self.first_epoch == "current":
                fresh = ~self.seen[index]
                signal = torch.where(fresh.unsqueeze(1), error, signal)
        signal = signal.detach()
        seeds = [(signal @ fb.T).reshape(o.shape) / size for fb, o in zip(self.feedback, outputs, strict=False)]
        roots = [loss] + [o for o in outputs[:-1] if o.requires_grad]
        grads = [None] + [s for s, o in zip(seeds, outputs[:-1], strict=False) if o.requires_grad]
        torch.autograd.backward(roots, grads)
        if self.signal == "delayed_error":
            self.buffer[index] = error.detach()
            self.seen[index] = True
        return loss.detach()


class _FeedbackMethod(Method):
    """Shared parameters and training loop (not registered itself)."""

    signal = "error"
    params = {
        **OPTIMIZER_PARAMS,
        "feedback_init": Param("uniform", choices=FEEDBACK_INITS),
        "feedback_scale": Param(1.0, low=1e-3, high=1e3, log=True),
        "clip_norm": Param(0.0, low=0.0, high=100.0, help="0: off"),
    }
    requires = frozenset({"sequential_blocks"})

    def check_model(self, model: nn.Module) -> str | None:
        return one_line_blocks_problem(model)

    def trainer(self, ctx: TrainContext) -> FeedbackTrainer:
        return FeedbackTrainer(ctx.model, self.signal, init=self.hp.feedback_init,
                               scale=self.hp.feedback_scale, seed=ctx.spec.seed)

    def train(self, ctx: TrainContext) -> None:
        if ctx.dist.world_size > 1:
            raise RuntimeError(f"{self.name} runs in a single process (world_size 1)")
        trainer = self.trainer(ctx)
        params = [p for p in ctx.model.parameters() if p.requires_grad]
        opt = make_optimizer(params, self.hp, ctx.global_batch)
        schedule = make_schedule(opt, self.hp, ctx.planned_steps, ctx.steps_per_epoch)
        ctx.record(feedback_signal=self.signal, blocks=len(trainer.blocks))
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
              "first_epoch": Param("zero", choices=("zero", "current"),
                                   help="signal of a sample not yet seen: none, or its current error")}
    requires = frozenset({"sequential_blocks", "sample_index"})

    def trainer(self, ctx: TrainContext) -> FeedbackTrainer:
        return FeedbackTrainer(ctx.model, self.signal, init=self.hp.feedback_init,
                               scale=self.hp.feedback_scale, seed=ctx.spec.seed,
                               n_samples=len(ctx.task.train_dataset()),
                               first_epoch=self.hp.first_epoch)


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
