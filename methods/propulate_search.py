"""Propulate: asynchronous evolutionary search on MPI islands over another method's parameters.

Each MPI rank is a worker that evaluates one trial per generation, without waiting for the others
(the paper's lazy synchronisation); trials are child runs. Run it on N workers with
``mpiexec -n N`` through the campaign launcher; alone it is a one-worker search. Checkpoints go to
the run's work directory, so a killed search resumes where it stopped when the run is started again.
"""

from __future__ import annotations

import logging
import math
import pickle
import random
import sys
import types
from pathlib import Path
from typing import Any

from joulebench.harness.context import TrainContext
from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.registry import register_method
from joulebench.methods.search import SEARCH_PARAMS, Tracker, run_trial, search_space


def import_propulate():
    """Import propulate without GPy where GPy cannot load.

    propulate 1.2.x imports GPy at import time for its optional surrogate models only; GPy 1.13 is
    built for numpy 1.x and cannot load beside numpy 2. We stand in a ``propulate.surrogate`` module
    whose ``Surrogate`` refuses to be used, so Propulator and Islands work and asking for a
    surrogate says why it cannot be had (see README, "Propulate and GPy").
    """
    try:
        import GPy  # noqa: F401
    except Exception:
        stand_in = types.ModuleType("propulate.surrogate")

        class Surrogate:  # the base class propulate type-annotates with; never instantiated here
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                raise RuntimeError("propulate surrogates need GPy, which does not load beside numpy 2")

        stand_in.Surrogate = Surrogate
        sys.modules.setdefault("propulate.surrogate", stand_in)
    import propulate
    from propulate.utils import get_default_propagator

    return propulate, get_default_propagator


def limits_for(space: dict[str, Param]) -> dict[str, tuple]:
    """Propulate limits; log-scaled floats are searched as their base-10 exponent."""
    limits: dict[str, tuple] = {}
    for name, p in space.items():
        if p.choices is not None:
            limits[name] = tuple(str(c) for c in p.choices)
        elif p.kind == "int":
            limits[name] = (int(p.low), int(p.high))
        elif p.log:
            limits[f"log10_{name}"] = (math.log10(p.low), math.log10(p.high))
        else:
            limits[name] = (float(p.low), float(p.high))
    return limits


def decode(space: dict[str, Param], individual: Any) -> dict[str, Any]:
    out = {}
    for name, p in space.items():
        if p.kind == "float" and p.log and p.choices is None:
            out[name] = 10.0 ** float(individual[f"log10_{name}"])
        else:
            out[name] = p.coerce(name, individual[name])
    return out


@register_method
class PropulateSearch(Method):
    name = "propulate"
    description = "Propulate: asynchronous evolutionary search on MPI islands; trials are child runs"
    search = True

    @classmethod
    def uses_methods(cls, hp) -> tuple[str, ...]:
        return (hp["inner"],)
    params = {
        **SEARCH_PARAMS,
        "generations": Param(4, low=1, high=100_000, help="trials evaluated by each worker"),
        "pop_size": Param(4, low=1, high=10_000, help="breeding population per island"),
        "islands": Param(1, low=1, high=1024),
        "migration_probability": Param(0.9, low=0.0, high=1.0),
        "pollination": Param(True, help="migrate copies (True) or move individuals (False)"),
        "crossover_prob": Param(0.7, low=0.0, high=1.0),
        "mutation_prob": Param(0.4, low=0.0, high=1.0),
        "random_init_prob": Param(0.1, low=0.0, high=1.0),
    }

    @classmethod
    def timeout_factor(cls, hp) -> float:
        return float(hp["generations"]) + 1

    def train(self, ctx: TrainContext) -> None:
        from mpi4py import MPI

        propulate, get_default_propagator = import_propulate()
        logging.getLogger("propulate").setLevel(logging.WARNING)
        comm = MPI.COMM_WORLD
        if comm.size < 2:
            raise RuntimeError("propulate needs at least 2 MPI ranks (with one, propulate 1.2 blocks "
                               "handing its checkpoint to itself): run it with world_size >= 2, "
                               "e.g. mpiexec -n 2 through the campaign launcher")
        space = search_space(self.hp.inner, self.hp.space, ctx.spec.task)
        rng = random.Random(ctx.spec.seed * 1000 + comm.rank)
        tracker = Tracker(ctx)

        def loss_fn(individual) -> float:
            params = decode(space, individual)
            return tracker.add(run_trial(ctx, self.hp.inner, params, self.hp.trial_budget), params)

        propagator = get_default_propagator(
            self.hp.pop_size, limits_for(space), self.hp.crossover_prob, self.hp.mutation_prob,
            self.hp.random_init_prob, rng=rng)
        checkpoint = ctx.work_dir / "propulate"
        if comm.rank == 0:
            discard_partial_checkpoints(checkpoint, comm.size // min(self.hp.islands, comm.size))
        comm.barrier()
        islands = propulate.Islands(
            loss_fn, propagator, rng, generations=self.hp.generations,
            num_islands=min(self.hp.islands, comm.size), migration_probability=self.hp.migration_probability,
            pollination=self.hp.pollination, checkpoint_path=checkpoint)
        islands.propulate(logging_interval=10**9, debug=0)
        others = comm.allgather(_portable(tracker.best))
        tracker.finish([row for row in others if row is not None])


def discard_partial_checkpoints(path: Path, workers_per_island: int) -> None:
    """Set aside checkpoints in which some worker has no individual yet.

    propulate 1.2 resumes each worker from its own last generation in the checkpoint and fails
    (ValueError on an empty max) for a worker that has none, leaving the other workers waiting in
    a barrier for ever. Such an early checkpoint holds little: the search starts afresh instead.
    """
    for file in sorted(path.glob("island_*_ckpt.pickle")) + sorted(path.glob("island_*_ckpt.bkp")):
        try:
            with open(file, "rb") as fh:
                population = pickle.load(fh)
            ranks = {ind.rank for ind in population}
        except Exception:  # unreadable (killed while writing): worthless
            ranks = set()
        if not set(range(workers_per_island)) <= ranks:
            file.rename(file.with_name(file.name + ".partial"))


def _portable(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """What other ranks need of a best trial (rows hold timestamps and large provenance)."""
    if row is None:
        return None
    keep = ("run_key", "status", "primary_value", "metrics_json", "_params")
    return {k: v for k, v in row.items() if k in keep or k.startswith("val_")}
