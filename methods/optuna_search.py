"""Optuna (TPE by default) over another method's declared parameter ranges: the comparison the
Propulate paper makes. Parallel workers share a study through a journal file."""

from __future__ import annotations

import logging

from joulebench.harness.context import TrainContext
from joulebench.harness.method import Method
from joulebench.harness.params import Param
from joulebench.harness.registry import register_method
from joulebench.methods.search import SEARCH_PARAMS, Tracker, run_trial, search_space


def suggest(trial, name: str, p: Param):
    if p.choices is not None:
        return trial.suggest_categorical(name, list(p.choices))
    if p.kind == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(name, float(p.low), float(p.high), log=p.log)


def storage_for(url: str):
    """'' → in memory; a URL (sqlite://, postgresql://) as is; a file path → a journal file that
    several worker processes can share safely."""
    if not url:
        return None
    if "://" in url:
        return url
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(url))


@register_method
class OptunaSearch(Method):
    name = "optuna"
    description = "Optuna search (TPE or random) over another method's parameters; trials are child runs"
    search = True

    @classmethod
    def uses_methods(cls, hp) -> tuple[str, ...]:
        return (hp["inner"],)
    params = {
        **SEARCH_PARAMS,
        "trials": Param(8, low=1, high=100_000, help="trials run by this worker"),
        "sampler": Param("tpe", choices=("tpe", "random")),
        "storage": Param("", help="journal file or database URL shared by parallel workers"),
        "study": Param("", help="study name (default: this run's key)"),
    }

    @classmethod
    def timeout_factor(cls, hp) -> float:
        return float(hp["trials"]) + 1

    def train(self, ctx: TrainContext) -> None:
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        space = search_space(self.hp.inner, self.hp.space, ctx.spec.task)
        seed = ctx.spec.seed * 1000 + ctx.dist.rank
        sampler = (optuna.samplers.TPESampler(seed=seed) if self.hp.sampler == "tpe"
                   else optuna.samplers.RandomSampler(seed=seed))
        study = optuna.create_study(direction="minimize", sampler=sampler,
                                    storage=storage_for(self.hp.storage),
                                    study_name=self.hp.study or ctx.spec.run_key, load_if_exists=True)
        tracker = Tracker(ctx)
        seconds = ctx.spec.budget.seconds
        for _ in range(self.hp.trials):
            if seconds is not None and ctx.train_seconds() >= seconds:
                break
            trial = study.ask()
            params = {name: suggest(trial, name, p) for name, p in space.items()}
            row = run_trial(ctx, self.hp.inner, params, self.hp.trial_budget)
            loss = tracker.add(row, params)
            if row.get("status") == "ok" and loss != float("inf"):
                study.tell(trial, loss)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        tracker.finish()
