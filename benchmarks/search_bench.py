"""Propulate against Optuna on the Propulate paper's benchmark functions, same evaluations, same workers.

Run on N MPI ranks (each rank is one worker of both optimisers)::

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/search_bench.py --evals 200

Propulate: asynchronous islands, each worker evaluating ``evals / N`` individuals. Optuna: TPE,
each worker running ``evals / N`` trials of one study shared through a journal file (Optuna's
storage for several processes). Rank 0 prints wall time and best loss per function, and the ratio.
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from pathlib import Path

from mpi4py import MPI

from joulebench.methods.propulate_search import import_propulate

FUNCTIONS = ("sphere", "rosenbrock", "rastrigin", "step", "griewank", "schwefel")


def run_propulate(fn, limits, generations: int, comm, ckpt: Path) -> float:
    propulate, get_default_propagator = import_propulate()
    rng = random.Random(1000 + comm.rank)
    propagator = get_default_propagator(4, limits, rng=rng)
    best = [float("inf")]

    def loss(ind) -> float:
        value = fn(ind)
        best[0] = min(best[0], value)
        return value

    islands = propulate.Islands(loss, propagator, rng, generations=generations, num_islands=1,
                                checkpoint_path=ckpt)
    islands.propulate(logging_interval=10**9, debug=0)
    return min(comm.allgather(best[0]))


def run_optuna(fn, limits, trials: int, comm, journal: Path, name: str) -> float:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    if comm.rank == 0:
        optuna.create_study(study_name=name, storage=storage, direction="minimize")
    comm.barrier()
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=1000 + comm.rank))
    study.optimize(lambda t: fn({k: t.suggest_float(k, lo, hi) for k, (lo, hi) in limits.items()}),
                   n_trials=trials)
    comm.barrier()
    return study.best_value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--evals", type=int, default=200, help="evaluations in all, split over ranks")
    parser.add_argument("--functions", default=",".join(FUNCTIONS[:3]))
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    import_propulate()
    from propulate.utils.benchmark_functions import get_function_search_space

    logging.getLogger("propulate").setLevel(logging.ERROR)
    per_worker = args.evals // comm.size
    tmp = Path(comm.bcast(tempfile.mkdtemp(prefix="search-bench-") if comm.rank == 0 else None))
    if comm.rank == 0:
        print(f"{comm.size} workers, {per_worker * comm.size} evaluations per optimiser and function")
        print(f"{'function':<12}{'propulate s':>13}{'best':>12}{'optuna s':>11}{'best':>12}{'optuna/propulate':>18}")
    for name in args.functions.split(","):
        fn, limits = get_function_search_space(name)
        comm.barrier()
        t0 = time.perf_counter()
        p_best = run_propulate(fn, limits, per_worker, comm, tmp / f"ckpt-{name}")
        comm.barrier()
        t_prop = time.perf_counter() - t0
        t0 = time.perf_counter()
        o_best = run_optuna(fn, limits, per_worker, comm, tmp / f"{name}.journal", name)
        t_opt = time.perf_counter() - t0
        if comm.rank == 0:
            print(f"{name:<12}{t_prop:>13.3f}{p_best:>12.4g}{t_opt:>11.3f}{o_best:>12.4g}{t_opt / t_prop:>17.1f}x")


if __name__ == "__main__":
    main()
