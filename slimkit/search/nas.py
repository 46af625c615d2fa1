"""Neural architecture search on Optuna: :func:`search` finds, :func:`run_nas` delivers.

Strategies are Optuna samplers:

- ``random``: independent uniform draws (Bergstra & Bengio 2012, JMLR), the baseline every
  NAS method must beat (Li & Talwalkar 2019, "Random Search and Reproducibility for NAS");
- ``tpe``: the Tree-structured Parzen Estimator (Bergstra et al. 2011, NeurIPS), Bayesian
  optimisation that models good and bad trials separately; multivariate over conditional
  parameters (Falkner et al. 2018), and multi-objective (MOTPE: Ozaki et al. 2020, GECCO) when
  there are several objectives;
- ``nsga2``: the evolutionary NSGA-II (Deb et al. 2002, IEEE TEC), non-dominated sorting with
  crowding distance, for several objectives.

Each trial trains briefly and poor ones are stopped early (:mod:`slimkit.search.pruning`). A
single objective gives one best trial, several give a Pareto front; from the front the
candidate with the best metric is chosen, or the cheapest within ``tolerance`` of it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from slimkit.data import Dataset
from slimkit.errors import SlimkitError
from slimkit.progress import StatusBar
from slimkit.search.config import NasConfig
from slimkit.search.pareto import pareto_front
from slimkit.search.pruning import make_pruner
from slimkit.search.space import SearchSpace
from slimkit.search.storage import open_storage, open_study, quiet_optuna, redact
from slimkit.search.trial import Objective

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
TPE_STARTUP = 8  # random trials before TPE models (Optuna's default is 10; NAS budgets are small)
NSGA2_POPULATION = 16  # Optuna's default of 50 would leave small budgets in generation one


@dataclass
class SearchResult:
    """A finished search: the study, its completed trials, the Pareto front and the choice."""

    study: optuna.Study
    objectives: list[str]
    completed: list[FrozenTrial]
    front: list[FrozenTrial]
    chosen: FrozenTrial
    first: FrozenTrial
    seconds: float
    storage: str = "memory"
    counts: dict[str, int] = field(default_factory=dict)

    def values(self, trial: FrozenTrial) -> dict[str, float]:
        """The objectives of ``trial`` by name."""
        return dict(zip(self.objectives, trial.values, strict=True))


def make_sampler(config: NasConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``config.sampler``, seeded.

    Example:
        >>> type(make_sampler(NasConfig(sampler="nsga2"), 0)).__name__
        'NSGAIISampler'
    """
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=NSGA2_POPULATION, seed=seed)
    with quiet_optuna():  # multivariate, group and constant_liar are "experimental" in Optuna
        return optuna.samplers.TPESampler(
            n_startup_trials=TPE_STARTUP,
            multivariate=True,  # models parameters jointly (Falkner et al. 2018)
            group=True,  # per-layer parameters exist only at some depths
            constant_liar=True,  # parallel workers do not all sample the same point
            seed=seed,
        )


def identity(space: SearchSpace, data: Dataset, config: NasConfig) -> dict[str, Any]:
    """What makes two trials comparable; a study joined with another identity is refused.

    Example:
        >>> from slimkit.data import load_data
        >>> space = SearchSpace(family="mlp", width=[16, 32])
        >>> identity(space, load_data("digits"), NasConfig())["input_shape"]
        [1, 8, 8]
    """
    keys = ("objectives", "epochs", "train_subset", "val_subset", "max_params", "latency_batch")
    return {
        "space": space.model_dump(mode="json"),
        "data": data.name,
        "input_shape": list(data.input_shape),
        **{k: getattr(config, k) for k in keys},
    }


def search(
    space: SearchSpace,
    data: Dataset,
    config: NasConfig,
    *,
    storage: str | None = None,
    study_name: str = "nas",
    quiet: bool | None = None,
) -> SearchResult:
    """Run (or join, or resume) the study ``study_name`` in ``storage`` until its budget is met.

    ``storage`` is any SQLAlchemy URL (``sqlite:///nas.db``, ``postgresql://...``); None keeps
    the study in memory. Processes that share storage and name share the search.

    Example:
        >>> from slimkit.data import load_data
        >>> from slimkit.search.space import SearchSpace
        >>> space = SearchSpace(family="mlp", width=[16, 32], depth=[1])
        >>> result = search(space, load_data("digits"), NasConfig(trials=2, epochs=1))
        >>> len(result.completed)
        2
    """
    space.check_not_constant()
    rdb = None
    if storage is not None:
        rdb = open_storage(
            storage,
            heartbeat_s=config.heartbeat_s,
            grace_s=config.grace_s,
            max_retry=config.max_retry,
        )
    study = open_study(
        rdb,
        study_name,
        config.directions,
        optuna.samplers.RandomSampler(),
        make_pruner(config.pruner if not config.multi_objective else "none"),
        identity(space, data, config),
    )
    done = len(study.get_trials(deepcopy=False, states=DONE))
    # Seeded by what is done already, so a resumed search does not replay its first draws.
    study.sampler = make_sampler(config, config.seed + done)
    _requeue_interrupted(study)
    start = time.perf_counter()
    _optimize(study, Objective(space, data, config), config, done, quiet)
    return summarize(study, config, time.perf_counter() - start, storage_label(storage))


def _optimize(
    study: optuna.Study, objective: Objective, config: NasConfig, done: int, quiet: bool | None
) -> None:
    remaining = None if config.trials is None else config.trials - done
    if remaining is not None and remaining <= 0:
        return  # the budget was met earlier (by this or another worker)
    callbacks = []
    if config.trials is not None:  # other workers' trials count too
        callbacks.append(optuna.study.MaxTrialsCallback(config.trials, states=DONE))
    with StatusBar("searching", remaining or 0, quiet) as bar, quiet_optuna():
        metric = config.objectives.index("metric")
        callbacks.append(lambda study, trial: _report_trial(study, trial, metric, bar, quiet))
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=config.timeout,
            catch=(Exception,),  # a failed trial is recorded FAIL and the search goes on
            callbacks=callbacks,
        )


def _report_trial(
    study: optuna.Study, trial: FrozenTrial, metric: int, bar: StatusBar, quiet: bool | None
) -> None:
    """Advance the bar; a failed trial gets one line on stderr (unless quiet) and the search
    goes on."""
    if trial.state == TrialState.FAIL and not quiet:
        error = trial.user_attrs.get("error", "unknown error")
        print(f"warning: trial {trial.number} failed: {error}", file=sys.stderr)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max((t.values[metric] for t in complete), default=0.0)
    bar.advance(f"trial {trial.number} {trial.state.name.lower()}, best metric {best:.4f}")


def _requeue_interrupted(study: optuna.Study) -> None:
    """Enqueue again, once, each trial that an interrupt (Ctrl-C) stopped, with its parameters.

    Killed workers are handled by the storage's heartbeat (:mod:`slimkit.search.storage`).
    """
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        interrupted = t.state == TrialState.FAIL and t.user_attrs.get("error") == "interrupted"
        if interrupted and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def summarize(
    study: optuna.Study, config: NasConfig, seconds: float = 0.0, storage: str = "memory"
) -> SearchResult:
    """Front and choice over the study's completed trials (of every worker).

    Example:
        >>> study = optuna.create_study(direction="maximize")
        >>> for value in (0.8, 0.9):
        ...     study.add_trial(optuna.trial.create_trial(value=value))
        >>> result = summarize(study, NasConfig())
        >>> result.chosen.number, result.counts
        (1, {'complete': 2})
    """
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    if not completed:
        failed = [t for t in trials if t.state == TrialState.FAIL]
        why = f"; first failure: {failed[0].user_attrs.get('error', '?')}" if failed else ""
        raise SlimkitError(
            f"no trial completed ({counts['fail']} failed, {counts['pruned']} pruned){why}"
        )
    front = [completed[i] for i in pareto_front([t.values for t in completed], config.directions)]
    return SearchResult(
        study=study,
        objectives=list(config.objectives),
        completed=completed,
        front=front,
        chosen=choose(front, config),
        first=min(completed, key=lambda t: t.number),
        seconds=seconds,
        storage=storage,
        counts={k: v for k, v in counts.items() if v},
    )


def choose(front: list[FrozenTrial], config: NasConfig) -> FrozenTrial:
    """The front member with the best metric, or the cheapest (first cost objective) of those
    within ``config.tolerance`` of it; ties go to the earlier trial.

    Example:
        >>> from optuna.trial import create_trial
        >>> front = [create_trial(values=[0.9, 5.0]), create_trial(values=[0.89, 2.0])]
        >>> choose(front, NasConfig(objectives="metric,latency", tolerance=0.02)).values
        [0.89, 2.0]
    """
    m = config.objectives.index("metric")
    best = max(t.values[m] for t in front)
    near = [t for t in front if t.values[m] >= best - config.tolerance]
    costs = [i for i, name in enumerate(config.objectives) if name != "metric"]
    if not costs or config.tolerance == 0:
        return min(near, key=lambda t: (-t.values[m], t.number))
    return min(near, key=lambda t: (t.values[costs[0]], -t.values[m], t.number))


def default_storage(out: Path) -> str:
    """The SQLite file a search keeps in its output folder.

    Example:
        >>> url = default_storage(Path("nas-out"))
        >>> url.startswith("sqlite:///"), url.endswith("/nas-out/study.db")
        (True, True)
    """
    return f"sqlite:///{(out / 'study.db').resolve()}"


def storage_label(url: str | None) -> str:
    """How reports name a storage: the URL without its password.

    Example:
        >>> storage_label(None), storage_label("postgresql://me:secret@db/nas")
        ('memory', 'postgresql://me:***@db/nas')
    """
    return "memory" if url is None else redact(url)
