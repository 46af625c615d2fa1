"""Early stopping of poor trials: after each training epoch, stop a trial that lags the others.

Two rules, both on the validation metric (higher is better):

- ``median``: stop when the trial's best value so far is below the median of the finished
  trials at the same epoch (the median stopping rule of Google Vizier: Golovin et al. 2017,
  KDD; Optuna's ``MedianPruner``).
- ``halving``: asynchronous successive halving (Jamieson & Talwalkar 2016, AISTATS; ASHA:
  Li et al. 2020, MLSys): at rungs of 1, 3, 9, ... epochs only the top third of the trials that
  reached the rung carry on (Optuna's ``SuccessiveHalvingPruner``).

Single-objective studies use Optuna's own pruners through ``trial.report``/``should_prune``.
Optuna does not support those calls in multi-objective studies, so there the same two rules are
applied here to the per-epoch curves that each trial keeps in its ``curve`` user attribute.
Note that pruning looks at the metric only: in a multi-objective search it may stop a cheap but
less accurate candidate that would have sat on the Pareto front (``pruner="none"`` keeps them).
"""

from __future__ import annotations

import statistics
from typing import Literal

import optuna
from optuna.trial import TrialState

PrunerName = Literal["none", "median", "halving"]
STARTUP_TRIALS = 3  # median: finished trials needed before anything is stopped
WARMUP_EPOCHS = 1  # median: epochs every trial gets before it can be stopped
ETA = 3  # halving: reduction factor; rungs at 1, 3, 9, ... epochs


def make_pruner(name: PrunerName) -> optuna.pruners.BasePruner:
    """The Optuna pruner used by single-objective studies.

    Example:
        >>> type(make_pruner("halving")).__name__
        'SuccessiveHalvingPruner'
    """
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=STARTUP_TRIALS, n_warmup_steps=WARMUP_EPOCHS
        )
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA)
    return optuna.pruners.NopPruner()


class EpochPruner:
    """Called after every epoch with the validation metric; raises ``TrialPruned`` to stop.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(directions=["maximize", "minimize"])
        >>> trial = study.ask()
        >>> EpochPruner("median", multi_objective=True)(trial, 1, 0.5)  # nothing to compare yet
    """

    def __init__(self, name: PrunerName, multi_objective: bool) -> None:
        self.name = name
        self.multi_objective = multi_objective

    def __call__(self, trial: optuna.Trial, epoch: int, value: float) -> None:
        if self.name == "none":
            return
        if not self.multi_objective:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"stopped after epoch {epoch} ({self.name})")
            return
        curve = [*trial.user_attrs.get("curve", []), value]
        trial.set_user_attr("curve", curve)
        # The median rule compares with finished trials, ASHA with every trial at the rung.
        states = (TrialState.COMPLETE,) if self.name == "median" else None
        others = [
            t.user_attrs.get("curve", [])
            for t in trial.study.get_trials(deepcopy=False, states=states)
            if t.number != trial.number
        ]
        stop = (
            _median_stop(curve, others) if self.name == "median" else _halving_stop(curve, others)
        )
        if stop:
            raise optuna.TrialPruned(f"stopped after epoch {epoch} ({self.name})")


def _median_stop(curve: list[float], others: list[list[float]]) -> bool:
    """Best so far below the median of the other trials' values at this epoch."""
    epoch = len(curve)
    finished = [c[epoch - 1] for c in others if len(c) >= epoch]
    if epoch <= WARMUP_EPOCHS or len(finished) < STARTUP_TRIALS:
        return False
    return max(curve) < statistics.median(finished)


def _halving_stop(curve: list[float], others: list[list[float]]) -> bool:
    """At a rung (1, ETA, ETA^2, ... epochs): outside the top 1/ETA of the trials there."""
    epoch = len(curve)
    rung = 1
    while rung < epoch:
        rung *= ETA
    if rung != epoch:
        return False
    values = sorted([c[epoch - 1] for c in others if len(c) >= epoch] + [curve[-1]], reverse=True)
    keep = max(len(values) // ETA, 1)  # as Optuna: with fewer than ETA trials only the best goes on
    return curve[-1] < values[keep - 1]
