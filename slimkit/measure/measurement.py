"""One call that measures a model the same way however it was made: :func:`measure`."""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.data import Dataset, Split
from slimkit.errors import SlimkitError
from slimkit.measure.counts import count_macs, count_nonzero, count_params, file_size
from slimkit.measure.latency import ort_latency_ms, torch_latency_ms
from slimkit.measure.onnx_runtime import (
    export_onnx,
    fixed_batch,
    onnx_parity,
    onnx_weight_counts,
    ort_session,
)
from slimkit.measure.predict import evaluate
from slimkit.models.loading import OnnxModule

SPLITS = ("train", "val", "test")
LATENCY_BATCHES = (1, 64)
PARITY_ROWS = 256  # enough rows to catch a broken export, few enough to stay fast


@dataclass
class Measurement:
    """The MEASUREMENT block of report.json (see DESIGN.md); None where a field does not apply.

    Example:
        >>> m = Measurement(metric=0.9, error=0.1, params=10, nonzero_params=8, macs=None,
        ...                 size_bytes=None, artifact=None, latency_ms={}, parity=None)
        >>> m.to_dict()["nonzero_params"]
        8
    """

    metric: float
    error: float
    params: int
    nonzero_params: int
    macs: int | None
    size_bytes: int | None
    artifact: str | None
    latency_ms: dict[str, float | None]
    parity: dict[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict."""
        return asdict(self)


def _significant(value: float, digits: int) -> float:
    """Round to significant digits, so a fast latency never rounds to zero."""
    return float(f"{value:.{digits}g}")


def _split(data: Dataset, split: str) -> Split:
    if split not in SPLITS:
        raise SlimkitError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if data.metric != "accuracy":
        raise SlimkitError(f"measure() scores accuracy only, but {data.name} uses {data.metric!r}")
    return getattr(data, split)


def _weights(model: nn.Module) -> tuple[int, int]:
    if isinstance(model, OnnxModule):
        return onnx_weight_counts(model.path)
    return count_params(model), count_nonzero(model)


def _macs(model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    # Hooks count MACs; an ONNX session and TorchScript have none, and text has no input shape.
    if not input_shape or isinstance(model, (OnnxModule, torch.jit.ScriptModule)):
        return None
    return count_macs(model, input_shape)


def _artifact(
    artifact: str | Path | None, relative_to: str | Path | None
) -> tuple[int | None, str | None]:
    """(bytes on disk, path as the report names it) of the artifact, if there is one."""
    if artifact is None:
        return None, None
    size = file_size(artifact)
    if relative_to is None:
        return size, Path(artifact).as_posix()
    base = Path(relative_to)
    base = base.parent if base.is_file() else base  # a report file: relative to its folder
    return size, Path(os.path.relpath(Path(artifact).resolve(), base.resolve())).as_posix()


def _onnx_file(
    model: nn.Module,
    onnx_path: str | Path | None,
    input_shape: tuple[int, ...],
    workdir: str,
    export: bool,
) -> Path | None:
    """The ONNX file to run in ONNX Runtime: given, the model's own, or exported to ``workdir``."""
    if onnx_path is not None:
        if not Path(onnx_path).is_file():
            raise SlimkitError(f"ONNX file {onnx_path} does not exist")
        return Path(onnx_path)
    if isinstance(model, OnnxModule):
        return model.path
    if not export or not input_shape:
        return None
    try:
        return export_onnx(model, Path(workdir) / "model.onnx", input_shape)
    except SlimkitError as exc:
        # A model the exporter cannot handle still gets its PyTorch numbers.
        warnings.warn(f"{exc}; ONNX Runtime latency and parity are left out", stacklevel=3)
        return None


def _no_latencies() -> dict[str, float | None]:
    return {f"{runtime}_b{b}": None for runtime in ("torch", "ort") for b in LATENCY_BATCHES}


def _latencies(
    model: nn.Module, onnx_file: Path | None, input_shape: tuple[int, ...], threads: int
) -> dict[str, float | None]:
    result = _no_latencies()
    if not input_shape:
        return result
    if not isinstance(model, OnnxModule):
        for batch in LATENCY_BATCHES:
            ms = torch_latency_ms(model, input_shape, batch, threads=threads)
            result[f"torch_b{batch}"] = _significant(ms, 4)
    if onnx_file is not None:
        fixed = fixed_batch(ort_session(onnx_file))
        for batch in LATENCY_BATCHES:
            if fixed in (None, batch):  # a fixed-batch ONNX file is timed at its batch only
                ms = ort_latency_ms(onnx_file, input_shape, batch, threads=threads)
                result[f"ort_b{batch}"] = _significant(ms, 4)
    return result


def _parity(model: nn.Module, onnx_file: Path | None, x: Any) -> dict[str, float] | None:
    if onnx_file is None or isinstance(model, OnnxModule) or not isinstance(x, torch.Tensor):
        return None  # an OnnxModule *is* the ORT session: parity would compare it with itself
    parity = onnx_parity(model, onnx_file, x[:PARITY_ROWS])
    return {
        "max_abs_diff": _significant(parity["max_abs_diff"], 3),
        "top1_agreement": round(parity["top1_agreement"], 6),
    }


def measure(
    model: nn.Module,
    data: Dataset,
    *,
    split: str = "test",
    artifact: str | Path | None = None,
    relative_to: str | Path | None = None,
    onnx_path: str | Path | None = None,
    threads: int = 2,
    latency: bool = True,
) -> dict[str, Any]:
    """Measure a model: metric, error, parameters, non-zero parameters, MACs, size and latency.

    Works on any ``nn.Module`` and on an :class:`~slimkit.models.loading.OnnxModule` (then the
    metric comes from ONNX Runtime, parameters from the ONNX initializers, and MACs and PyTorch
    latency are None).

    Args:
        model: The model to measure; left in the train/eval mode it was in.
        data: The data set; ``split`` of it is scored.
        split: ``train``, ``val`` or ``test``.
        artifact: The file the model was saved to; ``size_bytes`` is its size on disk
            (None without one; for an OnnxModule its own file is the default).
        relative_to: Folder of the report; ``artifact`` is written relative to it.
        onnx_path: ONNX export of ``model`` to time and check; exported to a temporary folder
            when not given and ``latency`` is on.
        threads: CPU threads for both runtimes' latency.
        latency: Time the forward pass (PyTorch and ONNX Runtime at batch 1 and 64).

    Returns:
        The MEASUREMENT dict of report.json, plus ``parity`` ({max_abs_diff, top1_agreement}
        of ONNX Runtime against PyTorch on up to 256 inputs of the split, or None).

    Example:
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> data = load_data("digits")
        >>> result = measure(build_model("mlp", data.input_shape, 10), data, latency=False)
        >>> result["params"], result["macs"]
        (50826, 50432)
    """
    chosen = _split(data, split)
    metric = round(evaluate(model, chosen), 6)
    is_onnx = isinstance(model, OnnxModule)
    images = isinstance(chosen.x, torch.Tensor) and len(data.input_shape) > 0
    input_shape = tuple(data.input_shape) if images else ()
    if artifact is None and is_onnx:
        artifact = model.path
    size_bytes, artifact_name = _artifact(artifact, relative_to)
    params, nonzero = _weights(model)
    with tempfile.TemporaryDirectory(prefix="slimkit-measure-") as workdir:
        onnx_file = _onnx_file(model, onnx_path, input_shape, workdir, export=latency)
        latencies = (
            _latencies(model, onnx_file, input_shape, threads) if latency else _no_latencies()
        )
        return Measurement(
            metric=metric,
            error=round(1.0 - metric, 6),
            params=params,
            nonzero_params=nonzero,
            macs=_macs(model, input_shape),
            size_bytes=size_bytes,
            artifact=artifact_name,
            latency_ms=latencies,
            parity=_parity(model, onnx_file, chosen.x),
        ).to_dict()
