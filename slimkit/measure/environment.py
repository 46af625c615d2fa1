"""What a measurement ran on: library versions, Python, CPU model and thread count."""

from __future__ import annotations

import importlib
import platform
from pathlib import Path
from typing import Any


def _version(module: str) -> str | None:
    # The module's own __version__, not the distribution's: onnxruntime ships under several
    # distribution names (onnxruntime, onnxruntime-gpu, ...), and torch's carries its build tag.
    try:
        return str(importlib.import_module(module).__version__)
    except (ImportError, AttributeError):
        return None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform`` says only the arch).

    Example:
        >>> isinstance(cpu_name(), str)
        True
    """
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def environment(threads: int) -> dict[str, Any]:
    """The ``environment`` block of report.json.

    Example:
        >>> env = environment(threads=2)
        >>> sorted(env)
        ['cpu', 'numpy', 'onnx', 'onnxruntime', 'os', 'python', 'threads', 'torch']
    """
    return {
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "os": platform.platform(),
        "cpu": cpu_name(),
        "threads": threads,
    }
