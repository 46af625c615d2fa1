"""The search: Optuna's TPE over the joint space, scored by stratified k-fold cross-validation.

Optuna (Akiba et al. 2019, "Optuna: A Next-generation Hyperparameter Optimization Framework")
runs the study; its TPE sampler (Bergstra et al. 2011, "Algorithms for Hyper-Parameter
Optimization") proposes candidates, seeded. Every candidate is scored on the same folds (one
StratifiedKFold with a fixed seed), so scores compare and out-of-fold probabilities can be
combined into an ensemble (Feurer et al. 2015). The folds of one trial run in parallel worker
processes; a trial that raises is recorded failed, and one that runs past its time limit is
stopped (its workers are killed) and recorded failed, and the search goes on.
"""

from __future__ import annotations

import math
import multiprocessing
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from sklearn.base import clone
from sklearn.ensemble import VotingClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from slimkit.errors import SlimkitError
from slimkit.progress import StatusBar
from slimkit.search.automl.config import AutoMLConfig, make_config
from slimkit.search.automl.ensemble import Selection, greedy_selection
from slimkit.search.automl.space import DEFAULTS, SpaceInfo, build_pipeline, suggest

MIN_RESERVE = 0.05  # share of the budget always kept for the ensemble, refit and saving
TIMEOUTS = (TimeoutError, multiprocessing.TimeoutError)  # sequential, joblib
DEFAULT_ORDER = ("svm", "linear", "hgb", "forest", "mlp", "knn")  # tried first, in this order


@dataclass
class Candidate:
    """One trial: its settings and k-fold score, or why it failed.

    Example:
        >>> row = Candidate(3, {"family": "knn", "n_neighbors": 5}, cv_mean=0.95123449).row()
        >>> row["family"], row["params"], row["cv_mean"], row["cv_std"]
        ('knn', {'n_neighbors': 5}, 0.951234, None)
    """

    trial: int
    params: dict[str, Any]
    cv_mean: float = math.nan
    cv_std: float = math.nan
    seconds: float = 0.0
    state: str = "complete"
    error: str | None = None

    def row(self) -> dict[str, Any]:
        """The candidate as a leaderboard entry."""
        params = {k: v for k, v in self.params.items() if k != "family"}
        row = {"trial": self.trial, "family": self.params["family"], "params": params,
               "cv_mean": _round(self.cv_mean), "cv_std": _round(self.cv_std),
               "seconds": round(self.seconds, 3), "state": self.state}  # fmt: skip
        if self.error:
            row["error"] = self.error
        return row


@dataclass
class AutoMLResult:
    """The fitted pipeline, the leaderboard and what was chosen."""

    pipeline: Pipeline
    leaderboard: list[dict[str, Any]]
    chosen: dict[str, Any]
    config: AutoMLConfig
    seconds: float
    trials: dict[str, int] = field(default_factory=dict)


def automl(
    x: np.ndarray,
    y: np.ndarray,
    config: AutoMLConfig | dict[str, Any] | None = None,
    *,
    categorical: list[int] | None = None,
    cv: Any = None,
    quiet: bool | None = None,
    **overrides: Any,
) -> AutoMLResult:
    """Search model family, hyperparameters and preprocessing; return the refitted best.

    ``x`` is a float array (NaN for missing) or an object array when ``categorical`` names text
    columns; ``y`` holds class indices. The budget covers the search, the ensemble and the
    refit on all rows. ``cv`` is a scikit-learn splitter (default
    ``StratifiedKFold(folds, shuffle=True, random_state=seed)``); its splits, computed once,
    score every candidate.

    Example:
        >>> from slimkit.search.automl.data import load_table
        >>> t = load_table("iris")
        >>> r = automl(t.x, t.y, budget=5, n_jobs=1, quiet=True)  # doctest: +SKIP
        >>> r.chosen["family"], r.pipeline.predict(t.x[:2])  # doctest: +SKIP
        ('svm', array([0, 0]))
    """
    cfg = make_config(config, **overrides)
    start = time.perf_counter()
    x, y = _check_data(x, y, cfg.folds)
    cv = cv or StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.seed)
    folds = list(cv.split(x, y))
    info = _space_info(x, categorical or [], folds, cfg)
    search = _Search(x, y, folds, info, cfg, end=start + cfg.budget)
    search.warm_workers()
    search.run(quiet)
    best = search.best()
    selection = search.ensemble() if cfg.ensemble else None
    use_ensemble = selection is not None and selection.cv_mean > best.cv_mean
    if use_ensemble:
        pipeline, chosen = search.refit_ensemble(selection)
    else:
        pipeline = _fit(build_pipeline(best.params, info, cfg.seed), x, y)
        chosen = {"kind": "single", "trial": best.trial, "family": best.params["family"],
                  "cv_mean": _round(best.cv_mean), "cv_std": _round(best.cv_std)}  # fmt: skip
    if selection is not None:
        chosen["ensemble_cv_mean"] = _round(selection.cv_mean)
    return AutoMLResult(pipeline, search.leaderboard(), chosen, cfg,
                        round(time.perf_counter() - start, 2), search.counts())  # fmt: skip


def _check_data(x: np.ndarray, y: np.ndarray, folds: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or len(x) != len(y):
        raise SlimkitError(f"automl needs x of shape (rows, columns) and one label per row; "
                           f"got x {x.shape}, y {y.shape}")  # fmt: skip
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise SlimkitError("automl needs at least 2 classes in the training data")
    if counts.min() < folds:
        raise SlimkitError(
            f"class {classes[counts.argmin()]} has {counts.min()} training rows, fewer than "
            f"the {folds} cross-validation folds; use fewer folds or more data"
        )
    if not np.array_equal(classes, np.arange(len(classes))):
        raise SlimkitError("automl needs labels as class indices 0..C-1")
    return x, y.astype(np.int64)


def _space_info(
    x: np.ndarray, categorical: list[int], folds: list[Any], cfg: AutoMLConfig
) -> SpaceInfo:
    numeric = [i for i in range(x.shape[1]) if i not in set(categorical)]
    missing = bool(np.isnan(x[:, numeric].astype(np.float64)).any()) if numeric else False
    smallest = min(len(train) for train, _ in folds)
    return SpaceInfo(numeric, list(categorical), missing, smallest, probability=cfg.ensemble)


def _fit(pipeline: Pipeline, x: np.ndarray, y: np.ndarray) -> Pipeline:
    """Fit quietly with one OpenMP / BLAS thread.

    Folds already run in parallel processes; letting HistGradientBoosting's OpenMP threads
    compete with them (or with other work on a busy machine) made a 0.1 s fit take a minute.
    """
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")  # convergence chatter of MLP / logistic regression
        return pipeline.fit(x, y)


def _fit_fold(
    pipeline: Pipeline, x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
    n_classes: int,
) -> tuple[float, np.ndarray | None]:  # fmt: skip
    """Fit on one fold's training rows; accuracy and class probabilities on its held-out rows."""
    from threadpoolctl import threadpool_limits

    model = _fit(clone(pipeline), x[train], y[train])
    with threadpool_limits(limits=1):  # prediction runs OpenMP too (see _fit)
        accuracy = float((model.predict(x[test]) == y[test]).mean())
        if not hasattr(model, "predict_proba"):
            return accuracy, None
        proba = np.zeros((len(test), n_classes), dtype=np.float32)
        proba[:, model.classes_] = model.predict_proba(x[test])  # a fold may lack a rare class
    return accuracy, proba


class _Search:
    """One study: runs the trials, keeps the candidates and the out-of-fold probabilities."""

    def __init__(self, x, y, folds, info: SpaceInfo, cfg: AutoMLConfig, end: float):
        self.x, self.y, self.folds, self.info, self.cfg = x, y, folds, info, cfg
        self.end = end  # when the whole run, refit included, should be over
        self.n_classes = int(y.max()) + 1
        self.candidates: list[Candidate] = []
        self.oof: dict[int, np.ndarray] = {}  # trial -> out-of-fold probabilities (best ones)

    def run(self, quiet: bool | None) -> None:
        """Optimise until the deadline (or ``n_trials``), one progress-bar tick per trial."""
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures go to the leaderboard
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.TPESampler(
                    seed=self.cfg.seed, multivariate=True, group=True
                )
                study = optuna.create_study(direction="maximize", sampler=sampler)
            for family in [f for f in DEFAULT_ORDER if f in self.cfg.families]:
                study.enqueue_trial(self._default(family))
            with StatusBar("automl", self.cfg.n_trials, quiet) as bar:  # type: ignore[arg-type]
                study.optimize(
                    self._objective,
                    n_trials=self.cfg.n_trials,
                    timeout=max(self.deadline - time.perf_counter(), 0.01),
                    catch=(Exception,),
                    callbacks=[lambda study, trial: self._after_trial(study, bar)],
                )
        finally:
            optuna.logging.set_verbosity(verbosity)
        if not any(c.state == "complete" for c in self.candidates):
            raise SlimkitError(self._nothing_finished())

    def _default(self, family: str) -> dict[str, Any]:
        params = {"family": family, **DEFAULTS[family]}
        if "knn.n_neighbors" in params:  # tiny data: k must stay below the fold's rows
            params["knn.n_neighbors"] = min(5, max(1, self.info.min_train_rows - 1))
        return params

    def _objective(self, trial: optuna.Trial) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            params = suggest(trial, self.cfg.families, self.info)
        candidate = Candidate(trial.number, params)
        self.candidates.append(candidate)
        start, limit = time.perf_counter(), self._limit()
        try:
            scores, probas = self._cross_validate(params, limit)
        except Exception as exc:
            candidate.state, candidate.error = "failed", _describe(exc, limit)
            raise
        finally:
            candidate.seconds = time.perf_counter() - start
        candidate.cv_mean, candidate.cv_std = float(np.mean(scores)), float(np.std(scores))
        self._keep_oof(candidate, probas)
        return candidate.cv_mean

    @property
    def deadline(self) -> float:
        """When the search must stop: the end less the time the refit is expected to take.

        The refit fits the chosen candidates one after the other on all rows (1.25x a fold's
        rows); a trial's wall time is about ``folds / n_jobs`` fold fits, so each member's
        trial seconds * n_jobs / folds * 1.25 estimates its refit.
        """
        pool = self._ranked()[: self.cfg.ensemble_size if self.cfg.ensemble else 1]
        refit = 1.25 * self.cfg.n_jobs * sum(c.seconds for c in pool) / len(self.folds)
        return self.end - max(refit, MIN_RESERVE * self.cfg.budget)

    def _after_trial(self, study: optuna.Study, bar: StatusBar) -> None:
        bar.advance(self._status())
        if time.perf_counter() >= self.deadline:
            study.stop()

    def _limit(self) -> float:
        """A trial's time limit: its own cap, and no later than shortly after the deadline."""
        grace = 0.05 * self.cfg.budget
        return max(0.5, min(self.cfg.trial_limit, self.deadline + grace - time.perf_counter()))

    def _cross_validate(
        self, params: dict[str, Any], limit: float
    ) -> tuple[list[float], list[Any]]:
        pipeline = build_pipeline(params, self.info, self.cfg.seed)
        jobs = [(pipeline, self.x, self.y, tr, te, self.n_classes) for tr, te in self.folds]
        if self.cfg.n_jobs == 1:
            results = self._sequential(jobs, limit)
        else:
            from joblib import Parallel, delayed

            # timeout: joblib kills the worker processes of a fold that runs too long
            try:
                results = Parallel(n_jobs=self.cfg.n_jobs, timeout=limit)(
                    delayed(_fit_fold)(*job) for job in jobs
                )
            except TIMEOUTS:
                self.warm_workers()  # fresh workers, so the next trial does not pay their start
                raise
        return [r[0] for r in results], [r[1] for r in results]

    def warm_workers(self) -> None:
        """Start the worker processes and import scikit-learn there, outside any trial's limit."""
        if self.cfg.n_jobs > 1:
            from joblib import Parallel, delayed

            Parallel(n_jobs=self.cfg.n_jobs)(delayed(_warm)() for _ in range(self.cfg.n_jobs))

    def _sequential(self, jobs: list[tuple[Any, ...]], limit: float) -> list[tuple[float, Any]]:
        """One process: a fit cannot be interrupted, so the limit is checked between folds."""
        stop = time.perf_counter() + limit
        results = []
        for job in jobs:
            if time.perf_counter() > stop:
                raise TimeoutError("time limit")
            results.append(_fit_fold(*job))
        return results

    def _keep_oof(self, candidate: Candidate, probas: list[Any]) -> None:
        """Keep out-of-fold probabilities of the best few candidates only (memory)."""
        if not self.cfg.ensemble or any(p is None for p in probas):
            return
        oof = np.zeros((len(self.y), self.n_classes), dtype=np.float32)
        for (_, test), proba in zip(self.folds, probas, strict=True):
            oof[test] = proba
        self.oof[candidate.trial] = oof
        keep = {c.trial for c in self._ranked()[: 2 * self.cfg.ensemble_size]}
        self.oof = {t: p for t, p in self.oof.items() if t in keep}

    def _ranked(self) -> list[Candidate]:
        done = [c for c in self.candidates if c.state == "complete" and not math.isnan(c.cv_mean)]
        return sorted(done, key=lambda c: (-c.cv_mean, c.cv_std, c.seconds))

    def best(self) -> Candidate:
        """The best single candidate (highest mean, then lowest spread, then fastest)."""
        return self._ranked()[0]

    def ensemble(self) -> Selection | None:
        """Greedy selection over the best ``ensemble_size`` candidates with probabilities."""
        pool = [c for c in self._ranked() if c.trial in self.oof][: self.cfg.ensemble_size]
        if len(pool) < 2:
            return None
        tests = [test for _, test in self.folds]
        selection = greedy_selection([self.oof[c.trial] for c in pool], self.y, tests)
        self._pool = pool
        return selection if selection.members >= 2 else None

    def refit_ensemble(self, selection: Selection) -> tuple[Pipeline, dict[str, Any]]:
        """Soft voting over the selected candidates, each refitted on all rows.

        The members are fitted in this process: VotingClassifier's own joblib call would start
        a second pool of workers (its thread settings differ), seconds for sub-second fits.
        """
        members = [(c, w) for c, w in zip(self._pool, selection.weights, strict=True) if w]
        voting = VotingClassifier(
            [(f"{c.params['family']}_{c.trial}", build_pipeline(c.params, self.info, self.cfg.seed))
             for c, _ in members],
            voting="soft", weights=[w for _, w in members],
        )  # fmt: skip
        pipeline = _fit(Pipeline([("ensemble", voting)]), self.x, self.y)
        chosen = {"kind": "ensemble", "cv_mean": _round(selection.cv_mean),
                  "cv_std": _round(selection.cv_std),
                  "members": [{"trial": c.trial, "family": c.params["family"], "weight": w}
                              for c, w in members]}  # fmt: skip
        return pipeline, chosen

    def leaderboard(self) -> list[dict[str, Any]]:
        """Completed trials best first, then failed ones in trial order."""
        failed = [c for c in self.candidates if c.state != "complete"]
        return [c.row() for c in self._ranked() + failed]

    def counts(self) -> dict[str, int]:
        """Trials run, completed and failed."""
        done = sum(c.state == "complete" for c in self.candidates)
        return {"total": len(self.candidates), "complete": done,
                "failed": len(self.candidates) - done}  # fmt: skip

    def _status(self) -> str:
        ranked = self._ranked()
        left = max(0.0, self.deadline - time.perf_counter())
        head = f"best {ranked[0].cv_mean:.4f} ({ranked[0].params['family']})" if ranked else ""
        return f"{head} {left:.0f}s left"

    def _nothing_finished(self) -> str:
        errors = [c.error for c in self.candidates if c.error]
        reason = f"; first failure: {errors[0]}" if errors else ""
        return (f"automl: no trial finished within the budget of {self.cfg.budget:g}s "
                f"({len(self.candidates)} started{reason}); give a larger --budget")  # fmt: skip


def _warm() -> None:
    import sklearn.ensemble  # the families' modules, imported once per worker
    import sklearn.linear_model
    import sklearn.neighbors
    import sklearn.neural_network
    import sklearn.svm  # noqa: F401


def _ship_by_value() -> None:
    """Workers get this module's functions by value (joblib's loky pickles with cloudpickle when
    it is installed): by reference they would import the ``slimkit.search.automl`` package, whose
    data module loads ``slimkit.data`` (torch), seconds per worker for nothing."""
    try:
        import cloudpickle
    except ImportError:  # loky falls back to pickle: slower worker start, same results
        return
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


_ship_by_value()


def _describe(exc: BaseException, limit: float) -> str:
    if isinstance(exc, TIMEOUTS):
        return f"stopped: ran past its time limit ({limit:.1f}s)"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _round(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)
