"""Reports: report.json (DESIGN.md schema), report.md, a console table and PNG figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from slimkit.io import atomic_path
from slimkit.report.build import build_report, save_json
from slimkit.report.figures import layer_sparsity, layer_stats, metric_vs_size
from slimkit.report.tables import print_table, ratios, to_markdown


def write_report(
    out_dir: str | Path, report: dict[str, Any], model: nn.Module | None = None
) -> list[Path]:
    """Write report.json, report.md and the figures into ``out_dir``; return the paths.

    Example:
        >>> import tempfile
        >>> m = {"metric": 0.9, "params": 10, "size_bytes": 40}
        >>> paths = write_report(tempfile.mkdtemp(), build_report({"data": "x"}, m, m))
        >>> sorted(p.name for p in paths)
        ['metric_vs_size.png', 'report.json', 'report.md']
    """
    out = Path(out_dir)
    paths = [save_json(report, out / "report.json")]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(to_markdown(report))
    paths.append(out / "report.md")
    paths.append(metric_vs_size(report, out / "metric_vs_size.png"))
    if model is not None:
        paths.append(layer_sparsity(layer_stats(model), out / "layers.png"))
    return paths


__all__ = [
    "build_report",
    "layer_stats",
    "print_table",
    "ratios",
    "save_json",
    "to_markdown",
    "write_report",
]
