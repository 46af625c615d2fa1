"""Measurement, independent of how a model was made: metric, size, MACs and latency.

Every number comes from running or reading the real thing: accuracy from a forward pass, size
from a file on disk, speed from timed runs in eager PyTorch and in ONNX Runtime (CPU).

Example:
    >>> from slimkit.data import load_data
    >>> from slimkit.models import build_model
    >>> data = load_data("digits")
    >>> sorted(measure(build_model("mlp", data.input_shape, 10), data, latency=False))[:3]
    ['artifact', 'error', 'latency_ms']
"""

from slimkit.measure.counts import count_macs, count_nonzero, count_params, file_size
from slimkit.measure.environment import environment
from slimkit.measure.latency import ort_latency_ms, torch_latency_ms
from slimkit.measure.measurement import Measurement, measure
from slimkit.measure.onnx_runtime import export_onnx, onnx_parity, onnx_weight_counts, ort_session
from slimkit.measure.predict import evaluate, predict

__all__ = [
    "Measurement",
    "count_macs",
    "count_nonzero",
    "count_params",
    "environment",
    "evaluate",
    "export_onnx",
    "file_size",
    "measure",
    "onnx_parity",
    "onnx_weight_counts",
    "ort_latency_ms",
    "ort_session",
    "predict",
    "torch_latency_ms",
]
