"""PNG figures saved next to report.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or assumed
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
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
    """Metric against bytes on disk: the path from baseline through each stage, and the peers.

    Example:
        >>> import tempfile
        >>> report = {"task": {}, "baseline": {"metric": 0.9, "size_bytes": 4096},
        ...           "result": {"metric": 0.88, "size_bytes": 1024}}
        >>> metric_vs_size(report, Path(tempfile.mkdtemp()) / "metric_vs_size.png").exists()
        True
    """
    path_points = [("baseline", report["baseline"])]
    path_points += [(s["name"], s) for s in report.get("stages", []) if s.get("size_bytes")]
    path_points.append(("result", report["result"]))
    peers = [(p.get("name", "peer"), p) for p in report.get("peers", []) if p.get("size_bytes")]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [m["size_bytes"] / 1024 for _, m in path_points if m.get("metric") is not None]
    ys = [m["metric"] for _, m in path_points if m.get("metric") is not None]
    ax.plot(xs, ys, "-o", color="#2e86de", label="slimkit stages")
    if peers:
        ax.plot(
            [m["size_bytes"] / 1024 for _, m in peers],
            [m["metric"] for _, m in peers],
            "x",
            color="#e15f41",
            markersize=9,
            label="peers",
        )
    for (x, y), label in _merged_labels(path_points + peers).items():
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    sizes = xs + [m["size_bytes"] / 1024 for _, m in peers]
    if max(sizes) / max(min(sizes), 1e-9) > 8:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:.1f}"))
    ax.set_xlabel("size on disk (KiB)")
    ax.set_ylabel(report["task"].get("metric", "metric"))
    ax.set_title("Metric vs size")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def _merged_labels(points: list[tuple[str, dict[str, Any]]]) -> dict[tuple[float, float], str]:
    """One label per position, joining the names of points that coincide."""
    labels: dict[tuple[float, float], list[str]] = {}
    for name, m in points:
        if m.get("metric") is not None:
            key = (round(m["size_bytes"] / 1024, 3), round(m["metric"], 6))
            labels.setdefault(key, []).append(name)
    return {key: " / ".join(names) for key, names in labels.items()}


def layer_sparsity(stats: list[dict[str, Any]], path: Path) -> Path:
    """Per-layer parameters (bars) and the share of them that are non-zero.

    Example:
        >>> import tempfile
        >>> stats = [{"layer": "fc1", "params": 100, "nonzero": 10}]
        >>> layer_sparsity(stats, Path(tempfile.mkdtemp()) / "layers.png").exists()
        True
    """
    names = [s["layer"] or "(root)" for s in stats]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names)), 4))
    ax.bar(names, [s["params"] for s in stats], color="#c8d6e5", label="parameters")
    ax.bar(names, [s["nonzero"] for s in stats], color="#2e86de", label="non-zero")
    ax.set_yscale("log")
    ax.set_ylabel("weights (log scale)")
    ax.set_title("Per-layer weights and non-zeros")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    ax.legend()
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Lay out ``fig``, write it as a PNG atomically (no half-written file) and close it.

    Example:
        >>> import tempfile
        >>> fig, ax = plt.subplots()
        >>> path = save_figure(fig, Path(tempfile.mkdtemp()) / "empty.png")
        >>> path.exists(), plt.fignum_exists(fig.number)
        (True, False)
    """
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
