"""One trial of a search: sample a candidate, train it briefly, measure its objectives.

A trial that raises (a bug, a shape the data cannot take, running out of memory) is recorded
FAIL with its message in the ``error`` user attribute, and the search goes on: the study's
``optimize`` is told to catch it. A candidate over ``max_params`` is not trained at all: it is
pruned at once, with the reason in the ``infeasible`` user attribute.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import optuna
import torch
from torch import nn

from slimkit.data import Dataset, Split
from slimkit.measure import count_params
from slimkit.search.config import NasConfig
from slimkit.search.objectives import measure_costs
from slimkit.search.pruning import EpochPruner
from slimkit.search.space import Candidate, SearchSpace
from slimkit.train import TrainConfig, TrainResult, fit, seed_everything

EpochCallback = Callable[[int, float], None]
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def subset(data: Dataset, train: int | None, val: int | None, seed: int = 0) -> Dataset:
    """``data`` with a seeded random subset of its train and validation splits (test unchanged).

    Brief training on part of the data ranks candidates almost as well as on all of it, for a
    fraction of the time (the usual proxy in NAS).

    Example:
        >>> from slimkit.data import load_data
        >>> small = subset(load_data("digits"), 200, 100)
        >>> len(small.train), len(small.val)
        (200, 100)
    """
    generator = torch.Generator().manual_seed(seed)

    def part(split: Split, n: int | None) -> Split:
        if n is None or n >= len(split):
            return split
        keep = torch.randperm(len(split), generator=generator)[:n]
        return Split(split.x[keep], split.y[keep])

    return dataclasses.replace(data, train=part(data.train, train), val=part(data.val, val))


def train_candidate(
    candidate: Candidate,
    data: Dataset,
    epochs: int,
    seed: int,
    *,
    on_epoch: EpochCallback | None = None,
    quiet: bool | None = True,
) -> tuple[nn.Module, TrainResult]:
    """Build ``candidate`` (initial weights from ``seed``) and train it with its own settings.

    ``on_epoch(epoch, validation_metric)`` runs after every epoch; it may raise (a pruner's
    ``TrialPruned``) to stop the training.

    Example:
        >>> from slimkit.data import load_data
        >>> data = load_data("digits")
        >>> c = Candidate(family="mlp", arch={"layers": [{"width": 32, "block": "plain"}]})
        >>> model, result = train_candidate(c, data, epochs=2, seed=0)
        >>> result.epochs_run
        2
    """
    seed_everything(seed)
    model = candidate.build(data.input_shape, data.num_classes)
    config = TrainConfig(epochs=epochs, lr=candidate.lr, batch_size=candidate.batch_size, seed=seed)
    result = fit(model, data, config, epoch_hook=on_epoch, quiet=quiet)
    return model, result


class Objective:
    """The function Optuna calls once per trial; returns the objectives' values in order."""

    def __init__(self, space: SearchSpace, data: Dataset, config: NasConfig) -> None:
        self.space = space
        self.config = config
        self.data = subset(data, config.train_subset, config.val_subset, config.seed)
        self.pruner = EpochPruner(config.pruner, config.multi_objective)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        try:
            return self.run(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted")  # retried when the search resumes
            raise
        except Exception as exc:  # includes torch.OutOfMemoryError and MemoryError
            trial.set_user_attr("error", f"{type(exc).__name__}: {_first_line(exc)}")
            raise

    def run(self, trial: optuna.Trial) -> tuple[float, ...]:
        """Sample, check the constraint, train briefly (pruning poor trials), measure."""
        candidate = self.space.sample(trial)
        trial.set_user_attr("candidate", candidate.model_dump())
        trial.set_user_attr("worker", WORKER)  # which process (machine) ran it
        self._check_size(trial, candidate)
        start = time.perf_counter()
        model, result = train_candidate(
            candidate,
            self.data,
            self.config.epochs,
            trial_seed(self.config.seed, trial.number),
            on_epoch=lambda epoch, value: self.pruner(trial, epoch, value),
        )
        seconds = time.perf_counter() - start
        metric = result.history[-1]["val"]
        costs = measure_costs(
            model,
            self.config.objectives,
            self.data.input_shape,
            latency_batch=self.config.latency_batch,
            threads=self.config.threads,
        )
        for key, value in {"metric": metric, **costs}.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("seconds_per_epoch", seconds / max(result.epochs_run, 1))
        values = {"metric": metric, **costs}
        return tuple(float(values[name]) for name in self.config.objectives)

    def _check_size(self, trial: optuna.Trial, candidate: Candidate) -> None:
        params = count_params(candidate.build(self.data.input_shape, self.data.num_classes))
        trial.set_user_attr("params", params)
        limit = self.config.max_params
        if limit is not None and params > limit:
            reason = f"{params:,} parameters > max_params {limit:,}"
            trial.set_user_attr("infeasible", reason)
            raise optuna.TrialPruned(reason)


def trial_seed(seed: int, number: int) -> int:
    """Each trial's own seed, so that trials differ and a rerun of one repeats it.

    Example:
        >>> trial_seed(0, 3)
        3
    """
    return seed + number


def candidate_of(trial: optuna.trial.FrozenTrial) -> Candidate:
    """The candidate a finished trial trained (kept in its ``candidate`` user attribute).

    Example:
        >>> attrs = {"candidate": {"family": "mlp", "arch": {"layers": []}, "lr": 0.01}}
        >>> trial = optuna.trial.create_trial(value=0.9, user_attrs=attrs)
        >>> candidate_of(trial).lr, candidate_of(trial).model_name
        (0.01, 'searched-mlp')
    """
    return Candidate(**trial.user_attrs["candidate"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def describe(candidate: Candidate) -> dict[str, Any]:
    """A compact, JSON-ready description of a candidate for reports.

    Example:
        >>> describe(Candidate(family="mlp", arch={"layers": []}))["model"]
        'searched-mlp'
    """
    return {"model": candidate.model_name, **candidate.model_dump(exclude={"family"})}
