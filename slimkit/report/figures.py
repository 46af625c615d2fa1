"""PNG figures saved next to report.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or assumed
import matplotlib.pyplot as plt
from torch import nn

from slimkit.io import atomic_path


def layer_stats(model: nn.Module) -> list[dict[str, Any]]:
    """Per weight tensor (name, parameters, non-zeros), in module order.

    Example:
        >>> from slimkit.models import build_model
        >>> layer_stats(build_model("lenet300", (1, 28, 28), 10))[0]["params"]
        235200
    """
    stats = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Module) or not hasattr(weight, "dim"):
            continue
        if weight.dim() > 1:  # matrices and kernels; norms and biases are not compressed
            stats.append(
                {"layer": name, "params": weight.numel(), "nonzero": int((weight != 0).sum())}
            )
    return stats


def metric_vs_size(report: dict[str, Any], path: Path) -> Path:
    """Metric against bytes on disk for the baseline, every stage and the result."""
    points = [("baseline", report["baseline"])]
    points += [(s["name"], s) for s in report.get("stages", []) if s.get("size_bytes")]
    points += [(p.get("name", "peer"), p) for p in report.get("peers", []) if p.get("size_bytes")]
    points.append(("result", report["result"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, m in points:
        if m.get("metric") is None:
            continue
        ax.scatter(m["size_bytes"] / 1024, m["metric"], s=40)
        ax.annotate(
            label,
            (m["size_bytes"] / 1024, m["metric"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_xlabel("size on disk (KiB, log scale)")
    ax.set_ylabel(report["task"].get("metric", "metric"))
    ax.set_title("Metric vs size")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def layer_sparsity(stats: list[dict[str, Any]], path: Path) -> Path:
    """Per-layer parameters (bars) and the share of them that are non-zero."""
    names = [s["layer"] or "(root)" for s in stats]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names)), 4))
    ax.bar(names, [s["params"] for s in stats], color="#c8d6e5", label="parameters")
    ax.bar(names, [s["nonzero"] for s in stats], color="#2e86de", label="non-zero")
    ax.set_yscale("log")
    ax.set_ylabel("weights (log scale)")
    ax.set_title("Per-layer weights and non-zeros")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    ax.legend()
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
