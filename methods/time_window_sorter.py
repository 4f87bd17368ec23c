"""The classical time-window coincidence sorter, measured like any method.

The sorter is a model of the ``pet`` task (``-T model=sorter``): a fixed algorithm with no trainable
parameters whose forward sorts hits into coincidences. This method is how it is "trained": it makes
no gradient updates; it reads the training split once (or less, within the budget) and calibrates
the sorter's coincidence window (and, with ``calibrate=window+accept``, its geometric acceptance)
to the best training F1. ``calibrate=none`` keeps the task's window. The runner then times, meters
and evaluates the sorter exactly as it does a trained PETNet, so both land in the same table.
"""

from __future__ import annotations

import numpy as np
import torch

from joulebench.harness.context import TrainContext
from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.registry import register_method


@register_method
class TimeWindowSorterMethod(Method):
    name = "time_window_sorter"
    description = "Classical time-window coincidence sorter (pet, -T model=sorter): calibrates, no updates"
    params = {
        "calibrate": Param("window+accept", choices=("none", "window", "window+accept")),
        "max_window": Param(12, low=0, high=1000, help="largest window tried (steps)"),
    }
    requires = frozenset({"window_sorter"})
    fits_fixed_models = True

    def train(self, ctx: TrainContext) -> None:
        from joulebench.tasks.pet.metrics import match, truth_table
        from joulebench.tasks.pet.sorter import sort_coincidences

        sorter = ctx.model
        n = sorter.crystals_per_ring
        windows = [int(sorter.window)] if self.hp.calibrate == "none" else \
            list(range(int(self.hp.max_window) + 1))
        accepts = [sorter.accept]
        if self.hp.calibrate == "window+accept":
            accepts = [-1, *range(0, n // 4 + 1)]
        counts = np.zeros((len(windows), len(accepts), 3), dtype=np.int64)
        dataset = ctx.task.train_dataset()
        data = dataset.data
        for batch in ctx.batches():
            if self.hp.calibrate != "none":
                index = batch["index"].cpu().numpy()
                hits = np.concatenate([data.hits[dataset.hit_off[i]:dataset.hit_off[i + 1]]
                                       for i in index])
                pairs = np.concatenate([data.pairs[dataset.pair_off[i]:dataset.pair_off[i + 1]]
                                        for i in index])
                truth = truth_table(pairs)
                for wi, w in enumerate(windows):
                    for ai, acc in enumerate(accepts):
                        counts[wi, ai] += match(sort_coincidences(hits, w, n, acc), truth)
            ctx.step(None, batch, updates=0)
            if ctx.epoch + 1.0 / ctx.steps_per_epoch >= 1.0 - 1e-9:
                break  # one pass over the training data is all a calibration needs
        if self.hp.calibrate != "none" and counts.sum():
            tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
            f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
            wi, ai = np.unravel_index(int(np.argmax(f1)), f1.shape)
            sorter.window.fill_(torch.tensor(windows[wi]))
            sorter.accept = accepts[ai]
            ctx.record(train_f1=float(f1[wi, ai]))
        ctx.record(window=int(sorter.window), accept=int(sorter.accept))
