"""report.json: the schema of DESIGN.md, built from measurements."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import slimkit
from slimkit.io import atomic_path
from slimkit.measure import environment


def build_report(
    task: dict[str, Any],
    baseline: dict[str, Any],
    result: dict[str, Any],
    stages: list[dict[str, Any]] | None = None,
    peers: list[dict[str, Any]] | None = None,
    *,
    threads: int = 2,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble a report dict (``extra`` keys are added at the top level).

    Example:
        >>> m = {"metric": 0.9, "params": 10, "size_bytes": 40}
        >>> build_report({"data": "digits"}, m, m)["result"]["metric"]
        0.9
    """
    return {
        "slimkit_version": slimkit.__version__,
        "task": task,
        "baseline": baseline,
        "result": result,
        "stages": stages or [],
        "peers": peers or [],
        "environment": environment(threads),
        **extra,
    }


def save_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``report`` as indented JSON, whole or not at all.

    Example:
        >>> import tempfile
        >>> path = save_json({"metric": 0.9}, Path(tempfile.mkdtemp()) / "report.json")
        >>> json.loads(path.read_text())
        {'metric': 0.9}
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path
