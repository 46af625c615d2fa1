"""Sensitivity analysis: how the metric falls as each layer alone is pruned, and per-layer
sparsities that reach an overall target with the least loss.

Han et al. 2015 (Section 3.3, Figure 5) prune each layer on its own to find how sensitive it is,
then give sensitive layers (the first conv, the last fc) a lower sparsity; their LeNet-300-100
keeps 8% / 9% / 26% of fc1 / fc2 / fc3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimkit.data import Split
from slimkit.errors import SlimkitError
from slimkit.measure import evaluate
from slimkit.prune.magnitude import check_sparsity, layer_masks

DEFAULT_SWEEP = (0.0, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)

Curves = dict[str, list[tuple[float, float]]]


def sensitivity(
    layers: Mapping[str, nn.Module],
    model: nn.Module,
    split: Split,
    sparsities: Sequence[float] = DEFAULT_SWEEP,
    max_examples: int | None = 5000,
) -> Curves:
    """For each layer, the metric on ``split`` when that layer alone is pruned to each sparsity.

    Weights are zeroed temporarily (no retraining) and restored exactly afterwards.

    Example:
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> from slimkit.layers import select_layers
        >>> data = load_data("digits")
        >>> model = build_model("lenet300", data.input_shape, 10)
        >>> curves = sensitivity(select_layers(model), model, data.val, [0.0, 0.5])
        >>> sorted(curves), len(curves["1"])
        (['1', '3', '5'], 2)
    """
    for s in sparsities:
        check_sparsity(s, "sweep sparsity")
    if max_examples is not None and len(split) > max_examples:
        split = type(split)(split.x[:max_examples], split.y[:max_examples])
    curves: Curves = {}
    for name, module in layers.items():
        original = module.weight.detach().clone()
        curves[name] = []
        try:
            for s in sorted(sparsities):
                mask = layer_masks({name: module}, {name: s})[name]
                with torch.no_grad():
                    module.weight.copy_(original * mask)
                curves[name].append((float(s), evaluate(model, split)))
        finally:
            with torch.no_grad():
                module.weight.copy_(original)
    return curves


def _drop_curve(points: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(sparsities, metric drop) with the drop made non-decreasing, so it can be inverted."""
    s = np.array([p[0] for p in points])
    metric = np.array([p[1] for p in points])
    reference = metric[np.argmin(s)]
    return s, np.maximum.accumulate(np.maximum(reference - metric, 0.0))


def _grid(points: list[tuple[float, float]], steps: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """The monotone drop curve interpolated on a fine grid of sparsities."""
    s, drop = _drop_curve(points)
    grid = np.linspace(s[0], s[-1], steps)
    return grid, np.interp(grid, s, drop)


def _overall(shares: Mapping[str, float], sizes: Mapping[str, int]) -> float:
    return sum(shares[k] * sizes[k] for k in shares) / sum(sizes.values())


def allocate(
    curves: Curves, sizes: Mapping[str, int], target: float, iterations: int = 80
) -> dict[str, float]:
    """Per-layer sparsities that prune ``target`` of all weights with the least summed drop.

    The summed per-layer metric drop is minimised under the weight budget with a Lagrange
    multiplier: for a price ``lam`` per weight kept, each layer takes the sparsity minimising
    ``drop(s) - lam * n * s``; ``lam`` is bisected until the weighted sparsity reaches
    ``target``. A small layer whose pruning hurts (LeNet's last fc) thus stays denser than a large,
    robust one, as in Han et al.'s per-layer rates.

    Example:
        >>> curves = {"a": [(0.0, 0.9), (0.5, 0.9), (0.9, 0.8)], "b": [(0.0, 0.9), (0.9, 0.9)]}
        >>> shares = allocate(curves, {"a": 100, "b": 100}, 0.7)
        >>> round(shares["b"], 2), round(shares["a"], 2)
        (0.9, 0.5)
    """
    check_sparsity(target, "target sparsity")
    missing = set(sizes) - set(curves)
    if missing:
        raise SlimkitError(f"no sensitivity curve for layers {sorted(missing)}")
    ceiling = _overall({k: max(p[0] for p in curves[k]) for k in sizes}, sizes)
    if target > ceiling + 1e-9:
        raise SlimkitError(
            f"target sparsity {target} exceeds what the sweep covers ({ceiling:.4f}); "
            "add higher sparsities to the sweep"
        )
    grids = {k: _grid(curves[k]) for k in sizes}

    def shares_at(lam: float) -> dict[str, float]:
        return {k: float(g[np.argmin(d - lam * sizes[k] * g)]) for k, (g, d) in grids.items()}

    lo, hi = -30.0, 5.0  # log10 of the price per weight
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _overall(shares_at(10**mid), sizes) < target else (lo, mid)
    return _rescale(shares_at(10**hi), sizes, target)


def _rescale(shares: dict[str, float], sizes: Mapping[str, int], target: float) -> dict[str, float]:
    """Scale kept shares so the overall sparsity is exactly ``target``; layers that hit a bound
    (dense, or 99.9% sparse) are fixed there and the rest absorb the difference."""
    shares, free = dict(shares), set(sizes)
    want = (1 - target) * sum(sizes.values())
    for _ in range(len(sizes)):
        fixed = sum((1 - shares[k]) * sizes[k] for k in sizes if k not in free)
        kept = sum((1 - shares[k]) * sizes[k] for k in free)
        factor = (want - fixed) / kept if kept > 0 else 1.0
        scaled = {k: 1 - (1 - shares[k]) * factor for k in free}
        clipped = {k for k, v in scaled.items() if not 0.0 <= v <= 0.999}
        shares.update({k: min(max(v, 0.0), 0.999) for k, v in scaled.items()})
        free -= clipped
        if not clipped:
            break
    return shares


def plot_sensitivity(curves: Curves, path: str | Path, chosen: Mapping[str, float] | None = None):
    """Save the sweep (metric against sparsity, one line per layer) as a PNG; return its path.

    ``chosen`` marks each layer's allocated sparsity on its curve.

    Example:
        >>> import tempfile
        >>> plot_sensitivity({"fc": [(0.0, 0.9), (0.9, 0.5)]}, tempfile.mkdtemp() + "/s.png").suffix
        '.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimkit.report.figures import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        s, metric = zip(*points, strict=True)
        (line,) = ax.plot(s, metric, marker="o", markersize=3, label=name or "(root)")
        if chosen and name in chosen:
            ax.axvline(chosen[name], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xlabel("sparsity of the layer alone (no retraining)")
    ax.set_ylabel("metric")
    ax.set_title("Pruning sensitivity per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
