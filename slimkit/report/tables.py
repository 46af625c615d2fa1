"""Human-readable views of a report: a Markdown file and a rich console table."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

COLUMNS = ("metric", "params", "nonzero_params", "macs", "size_bytes", "ort_b1", "ort_b64")
HEADERS = ("model", "metric", "params", "nonzero", "MACs", "bytes", "ORT b1 ms", "ORT b64 ms")


def rows(report: dict[str, Any]) -> list[list[str]]:
    """Baseline, each stage, peers and result as rows of formatted cells.

    Example:
        >>> rows({"baseline": {"metric": 0.95, "params": 1000}, "result": {"metric": 0.94}})[0]
        ['baseline', '0.9500', '1,000', '-', '-', '-', '-', '-']
    """
    out = [_row("baseline", report["baseline"])]
    out += [_row(_stage_label(s), s) for s in report.get("stages", [])]
    out += [_row(f"peer: {p.get('name', '?')}", p) for p in report.get("peers", [])]
    out.append(_row("result", report["result"]))
    return out


def ratios(report: dict[str, Any]) -> dict[str, str]:
    """Baseline-over-result ratios for size, non-zeros, MACs and latency.

    Example:
        >>> ratios({"baseline": {"metric": 0.95, "size_bytes": 4000},
        ...         "result": {"metric": 0.94, "size_bytes": 1000}})
        {'smaller on disk': '4.00x', 'metric change': '-0.0100'}
    """
    base, res = report["baseline"], report["result"]
    out = {}
    for key, label in (
        ("size_bytes", "smaller on disk"),
        ("nonzero_params", "fewer non-zeros"),
        ("macs", "fewer MACs"),
    ):
        if base.get(key) and res.get(key):
            out[label] = f"{base[key] / res[key]:.2f}x"
    for key in ("ort_b1", "ort_b64"):  # ONNX Runtime is the deployment runtime (DESIGN.md)
        b, r = _latency(base, key), _latency(res, key)
        if b and r:
            out[f"{key} speed-up"] = f"{b / r:.2f}x"
    if base.get("metric") is not None and res.get("metric") is not None:
        out["metric change"] = f"{res['metric'] - base['metric']:+.4f}"
    return out


def to_markdown(report: dict[str, Any]) -> str:
    """report.md: task, the table of baseline vs stages vs result, ratios, environment.

    Example:
        >>> md = to_markdown({"task": {"data": "digits"}, "baseline": {"size_bytes": 4000},
        ...                   "result": {"size_bytes": 1000},
        ...                   "environment": {"threads": 2, "simd": ["avx2", "fma"]}})
        >>> md.splitlines()[0], "| smaller on disk | 4.00x |" in md
        ('# slimkit report: digits', True)
        >>> md.splitlines()[-1]
        'Environment: threads 2, simd avx2 fma'
    """
    task = report["task"]
    lines = [
        f"# slimkit report: {task.get('data')}",
        "",
        f"Metric: {task.get('metric')} on the {task.get('split')} split "
        f"({task.get('n')} examples).",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(report)]
    lines += ["", "| ratio (baseline / result) | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in ratios(report).items()]
    env = {k: " ".join(v) if isinstance(v, list) else v
           for k, v in report.get("environment", {}).items()}  # fmt: skip
    lines += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    return "\n".join(lines)


def print_table(report: dict[str, Any], console: Console | None = None) -> None:
    """Print the before/after table and ratios to the terminal.

    Example:
        >>> import io
        >>> console = Console(file=io.StringIO(), width=100)
        >>> print_table({"task": {}, "baseline": {"metric": 0.9}, "result": {"metric": 0.8}},
        ...             console)
        >>> console.file.getvalue().splitlines()[-1]
        '  metric change: -0.1000'
    """
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    table = Table(
        title=f"slimkit: {report['task'].get('data')} "
        f"({report['task'].get('metric')}, {report['task'].get('split')})"
    )
    for header in HEADERS:
        table.add_column(
            header, justify="left" if header == "model" else "right", no_wrap=header == "model"
        )
    for row in rows(report):
        table.add_row(*row)
    console.print(table)
    for label, value in ratios(report).items():
        console.print(f"  {label}: [bold]{value}[/bold]")


def _stage_label(stage: dict[str, Any]) -> str:
    name, kind = stage.get("name", "?"), stage.get("kind", "?")
    return f"  {name}" if name == kind else f"  {name} ({kind})"


def _row(label: str, m: dict[str, Any]) -> list[str]:
    cells = [label]
    for key in COLUMNS:
        value = _latency(m, key) if key.startswith(("torch_", "ort_")) else m.get(key)
        cells.append(_fmt(value))
    return cells


def _latency(m: dict[str, Any], key: str) -> float | None:
    return (m.get("latency_ms") or {}).get(key)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
