"""What a measurement ran on: library versions, Python, CPU model and features, thread count."""

from __future__ import annotations

import functools
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


# The instruction sets that decide which int8 and float kernels ONNX Runtime and PyTorch can use
# (VNNI: 8-bit dot products in one instruction; without it the u8 x s8 kernels are far slower).
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


CPUINFO = Path("/proc/cpuinfo")


@functools.cache  # read once: the name and the details come from the same file
def _cpuinfo(cpuinfo: Path = CPUINFO) -> dict[str, str]:
    """The fields of ``/proc/cpuinfo`` (empty off Linux): the first processor's where they
    repeat, and fields after the per-processor blocks too (ARM's ``Hardware``)."""
    fields: dict[str, str] = {}
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_details(cpuinfo: str | Path = CPUINFO) -> dict[str, Any]:
    """CPU family and model numbers, and which of :data:`SIMD_FLAGS` the CPU has: a
    hypervisor often shows only a marketing name ("AMD EPYC"), which hides a 4x difference in
    int8 GEMM speed between generations.

    Example:
        >>> sorted(cpu_details())
        ['cpu_family_model', 'simd']
    """
    info = _cpuinfo(Path(cpuinfo))
    flags = set((info.get("flags") or info.get("features") or "").split())
    family, model = info.get("cpu family"), info.get("model")
    return {
        "cpu_family_model": f"{family}/{model}" if family and model else None,
        "simd": [flag for flag in SIMD_FLAGS if flag in flags],
    }


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform`` says only the arch).

    Example:
        >>> isinstance(cpu_name(), str)
        True
    """
    info = _cpuinfo()
    for key in ("model name", "hardware", "cpu model"):
        if info.get(key):
            return info[key]
    return platform.processor() or platform.machine() or "unknown"


def environment(threads: int) -> dict[str, Any]:
    """The ``environment`` block of report.json.

    Example:
        >>> env = environment(threads=2)
        >>> sorted(env)  # doctest: +NORMALIZE_WHITESPACE
        ['cpu', 'cpu_family_model', 'numpy', 'onnx', 'onnxruntime', 'os', 'python', 'simd',
         'threads', 'torch']
    """
    return {
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "os": platform.platform(),
        "cpu": cpu_name(),
        **cpu_details(),
        "threads": threads,
    }
