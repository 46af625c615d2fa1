"""What a search optimises: the validation metric and hardware costs, measured or counted.

- ``metric``: the task metric on the validation split after the trial's brief training (maximise);
- ``latency``: median milliseconds of one ONNX Runtime run of the exported model (minimise);
- ``params``, ``macs``: parameters and multiply-accumulates per example, counted (minimise);
- ``bytes``: size on disk of the exported ONNX file (minimise).

Latency is measured, never inferred from MACs (DESIGN.md): the candidate is exported to ONNX and
timed on ONNX Runtime with the search's thread count and batch size.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from torch import nn

from slimkit.errors import SlimkitError
from slimkit.measure import count_macs, count_params, export_onnx, file_size, ort_latency_ms

DIRECTIONS = {
    "metric": "maximize",
    "latency": "minimize",
    "params": "minimize",
    "macs": "minimize",
    "bytes": "minimize",
}
UNITS = {"metric": "", "latency": "ms", "params": "", "macs": "", "bytes": "B"}


def parse_objectives(names: str | list[str]) -> list[str]:
    """Objective names from ``"metric,latency"`` or a list; ``metric`` must be among them.

    Example:
        >>> parse_objectives("metric, latency")
        ['metric', 'latency']
    """
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    items = [n for n in items if n]
    unknown = [n for n in items if n not in DIRECTIONS]
    if unknown:
        raise SlimkitError(f"unknown objective {unknown[0]!r}; known: {', '.join(DIRECTIONS)}")
    if len(set(items)) != len(items):
        raise SlimkitError(f"objectives repeat a name: {','.join(items)}")
    if "metric" not in items:
        raise SlimkitError(
            "objectives must include 'metric' (a search for cost alone finds an empty model)"
        )
    return items


def measure_costs(
    model: nn.Module,
    names: list[str],
    input_shape: tuple[int, ...],
    *,
    latency_batch: int = 1,
    threads: int = 2,
) -> dict[str, float]:
    """The cost objectives among ``names`` (params and MACs are always counted: they are cheap).

    Example:
        >>> from slimkit.models import build_model
        >>> net = build_model("mlp", (1, 8, 8), 10, hidden=(16,))
        >>> measure_costs(net, ["metric", "params"], (1, 8, 8))
        {'params': 1210, 'macs': 1184}
    """
    costs: dict[str, float] = {
        "params": count_params(model),
        "macs": count_macs(model, input_shape),
    }
    if {"latency", "bytes"} & set(names):
        with tempfile.TemporaryDirectory(prefix="slimkit-nas-") as tmp:
            onnx = export_onnx(model, Path(tmp) / "candidate.onnx", input_shape)
            if "bytes" in names:
                costs["bytes"] = file_size(onnx)
            if "latency" in names:
                costs["latency"] = ort_latency_ms(onnx, input_shape, latency_batch, threads=threads)
    return costs
