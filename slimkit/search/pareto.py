"""Pareto fronts, their 2-D hypervolume, and the front figure.

A point *dominates* another when it is at least as good in every objective and better in one;
the Pareto front is the set of points nothing dominates. The hypervolume of a front (Zitzler &
Thiele 1998) is the area it dominates up to a reference point: one number that grows when the
front moves towards better metric and lower cost, used to compare two searches.

Optuna 5 computes hypervolumes only in a private module (``optuna._hypervolume``), so the 2-D
case (metric to maximise, one cost to minimise) is computed here with a sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or assumed
import matplotlib.pyplot as plt

from slimkit.report.figures import save_figure

Point = tuple[float, ...]


def dominates(a: Point, b: Point, directions: Sequence[str]) -> bool:
    """Whether ``a`` dominates ``b`` under ``directions`` (``maximize``/``minimize`` each).

    Example:
        >>> dominates((0.9, 1.0), (0.8, 2.0), ["maximize", "minimize"])
        True
    """
    signs = [1 if d == "maximize" else -1 for d in directions]
    at_least = all(s * x >= s * y for s, x, y in zip(signs, a, b, strict=True))
    return at_least and any(s * x > s * y for s, x, y in zip(signs, a, b, strict=True))


def pareto_front(points: Sequence[Point], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (first of equal points only), in input order.

    Example:
        >>> pareto_front([(0.9, 2.0), (0.8, 1.0), (0.7, 3.0)], ["maximize", "minimize"])
        [0, 1]
    """
    front = []
    for i, p in enumerate(points):
        beaten = any(dominates(q, p, directions) for q in points)
        repeated = any(tuple(points[j]) == tuple(p) for j in front)
        if not beaten and not repeated:
            front.append(i)
    return front


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by (metric, cost) points, metric maximised and cost minimised, bounded
    by ``reference`` = (lowest metric, highest cost) counted. Points beyond it add nothing.

    Example:
        >>> hypervolume_2d([(0.9, 1.0), (0.8, 0.5)], reference=(0.5, 2.0))
        0.55
    """
    ref_metric, ref_cost = reference
    inside = sorted((c, m) for m, c in points if m > ref_metric and c < ref_cost)
    area, best = 0.0, ref_metric
    # Sweep from the cheapest point: each one adds the strip between its cost and the reference
    # cost, as high as it rises above the best metric seen at lower cost.
    for cost, metric in inside:
        if metric > best:
            area += (ref_cost - cost) * (metric - best)
            best = metric
    return round(area, 10)


def plot_fronts(
    series: dict[str, list[tuple[float, float]]],
    path: str | Path,
    *,
    cost_label: str,
    metric_label: str = "validation metric",
    chosen: tuple[float, float] | None = None,
    log_cost: bool = False,
) -> Path:
    """Scatter every search's (cost, metric) points and draw each one's Pareto front as steps.

    Example:
        >>> import tempfile
        >>> p = plot_fronts({"tpe": [(1.0, 0.9), (0.5, 0.8)]}, tempfile.mkdtemp() + "/f.png",
        ...                 cost_label="latency (ms)")
        >>> p.suffix
        '.png'
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = ["#2e86de", "#e15f41", "#10ac84", "#8854d0"]
    for (label, points), color in zip(series.items(), colors * 4, strict=False):
        if not points:
            continue
        ax.scatter(*zip(*points, strict=True), s=14, alpha=0.35, color=color)
        front = sorted(points[i] for i in pareto_front(
            [(m, c) for c, m in points], ["maximize", "minimize"]))  # fmt: skip
        ax.step(*zip(*front, strict=True), where="post", color=color, marker="o", label=label)
    if chosen is not None:
        ax.plot(*chosen, "*", color="black", markersize=14, label="chosen")
    if log_cost:
        ax.set_xscale("log")
    ax.set_xlabel(cost_label)
    ax.set_ylabel(metric_label)
    ax.set_title("Pareto front: metric vs cost (every trial, front as steps)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
