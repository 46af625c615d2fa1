"""Ensembles of the best candidates: greedy ensemble selection on out-of-fold probabilities.

Caruana et al. 2004 ("Ensemble selection from libraries of models"), as used by Auto-sklearn
(Feurer et al. 2015, "Efficient and Robust Automated Machine Learning"): start from the best
model, repeatedly add (with replacement) the model whose addition most improves the score of
the averaged predicted probabilities, keep the best round. The counts become the weights of a
soft-voting ensemble. Every candidate was scored on the same folds, so the out-of-fold
probabilities line up row for row and the ensemble's score is a k-fold score like theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Selection:
    """Weights (selection counts) over the pool and the ensemble's k-fold score."""

    weights: list[int]
    cv_mean: float
    cv_std: float

    @property
    def members(self) -> int:
        """How many distinct candidates the ensemble uses."""
        return sum(1 for w in self.weights if w > 0)


def fold_scores(proba: np.ndarray, y: np.ndarray, folds: list[np.ndarray]) -> np.ndarray:
    """Accuracy of ``argmax(proba)`` on each fold's held-out rows.

    Example:
        >>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
        >>> fold_scores(p, np.array([0, 1, 1, 1]), [np.array([0, 1]), np.array([2, 3])])
        array([1. , 0.5])
    """
    hits = proba.argmax(axis=1) == y
    return np.array([hits[index].mean() for index in folds])


def _log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0)).mean())


def greedy_selection(
    probas: list[np.ndarray], y: np.ndarray, folds: list[np.ndarray], rounds: int = 25
) -> Selection:
    """Caruana's forward selection with replacement; ties in accuracy go to lower log-loss.

    Example:
        >>> y = np.array([0, 1, 0, 1])
        >>> a = np.array([[0.6, 0.4], [0.6, 0.4], [0.6, 0.4], [0.4, 0.6]])  # 3 of 4 right
        >>> b = np.array([[0.4, 0.6], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])  # 3 of 4 right
        >>> s = greedy_selection([a, b], y, [np.array([0, 1]), np.array([2, 3])])
        >>> s.weights, s.cv_mean
        ([1, 1], 1.0)
    """
    counts = np.zeros(len(probas), dtype=int)
    total = np.zeros_like(probas[0], dtype=np.float64)
    best: tuple[tuple[float, float], list[int]] | None = None
    for step in range(1, rounds + 1):
        keys = []
        for p in probas:
            mixed = (total + p) / step
            keys.append((fold_scores(mixed, y, folds).mean(), -_log_loss(mixed, y)))
        pick = max(range(len(probas)), key=lambda j: keys[j])
        counts[pick] += 1
        total += probas[pick]
        if best is None or keys[pick] > best[0]:
            best = (keys[pick], counts.tolist())
    assert best is not None
    divisor = math.gcd(*best[1])
    weights = [w // divisor for w in best[1]]  # [11, 11] and [1, 1] are the same vote
    mixed = sum(w * p for w, p in zip(weights, probas, strict=True)) / sum(weights)
    scores = fold_scores(mixed, y, folds)
    return Selection(weights, float(scores.mean()), float(scores.std()))
