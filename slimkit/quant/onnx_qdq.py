"""ONNX in QDQ form: export a fake-quantized model, store its weights as integers, and check
that ONNX Runtime runs integer kernels and agrees with PyTorch.

The exporter writes each fake-quantizer as a QuantizeLinear/DequantizeLinear pair (the QDQ format
of ONNX Runtime's quantization tooling). Weights come out as float initializers behind a
QuantizeLinear; :func:`fold_weight_quantizers` replaces those with int8 initializers, which makes
the file about 4x smaller and is the form ONNX Runtime fuses into QLinearConv, QGemm and
MatMulIntegerToFloat.
"""

from __future__ import annotations

import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.io import atomic_path
from slimkit.measure import export_onnx, onnx_parity

INTEGER_OPS = {
    "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul", "QGemm", "QLinearAdd", "QAttention", "QLinearGlobalAveragePool",
    "QLinearAveragePool", "QLinearMul", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearSoftmax", "MatMulNBits",
}  # fmt: skip
FLOAT_COMPUTE_OPS = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "Attention"}


def export_qdq(model: nn.Module, path: str | Path, input_shape: Sequence[int]) -> Path:
    """Export a fake-quantized model as QDQ ONNX with int8 weight initializers.

    Example:
        >>> import tempfile
        >>> from slimkit.quant import QuantConfig, quantize
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> data = load_data("digits")
        >>> q = quantize(build_model("mlp", data.input_shape, 10), QuantConfig(), data)
        >>> export_qdq(q, tempfile.mkdtemp() + "/q.onnx", data.input_shape).suffix
        '.onnx'
    """
    import onnx

    path = Path(path)
    with torch.no_grad():  # refresh the cached scalars the exporter writes as constants
        model.eval()(torch.zeros(1, *input_shape))
    with tempfile.TemporaryDirectory(prefix="slimkit-qdq-") as tmp:
        raw = export_onnx(model, Path(tmp) / "qdq.onnx", input_shape)
        graph = onnx.load(str(raw))
    fold_weight_quantizers(graph)
    strip_debug_info(graph)
    with atomic_path(path) as out:
        onnx.save(graph, str(out))
    return path


def strip_debug_info(model: Any) -> None:
    """Drop the exporter's per-node debugging metadata (stack traces, scopes): on a small int8
    model it outweighs the weights. Shape hints stay: ONNX Runtime's fusions use them.

    Example:
        >>> from onnx import helper
        >>> node = helper.make_node("Relu", ["x"], ["y"])
        >>> helper.set_metadata_props(node, {"pkg.torch.onnx.stack_trace": "..."})
        >>> model = helper.make_model(helper.make_graph([node], "g", [], []))
        >>> strip_debug_info(model); len(model.graph.node[0].metadata_props)
        0
    """
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


def fold_weight_quantizers(model: Any) -> int:
    """Replace ``QuantizeLinear(float initializer)`` by the integer initializer it computes.

    Returns how many were folded. The integer values are computed as ONNX defines
    QuantizeLinear: ``saturate(round_half_even(x / scale) + zero_point)``.

    Example:
        >>> import numpy as np
        >>> from onnx import helper, numpy_helper
        >>> w, s, z = (numpy_helper.from_array(a, n) for a, n in
        ...            ((np.array([0.5, -1.0], np.float32), "w"), (np.array(0.01, np.float32), "s"),
        ...             (np.array(0, np.int8), "z")))
        >>> node = helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"])
        >>> model = helper.make_model(helper.make_graph([node], "g", [], [], [w, s, z]))
        >>> folded = fold_weight_quantizers(model)
        >>> folded, numpy_helper.to_array(model.graph.initializer[-1]).tolist()
        (1, [50, -100])
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    consumers = Counter(name for node in graph.node for name in node.input)
    folded, keep = 0, []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or not all(n in inits for n in node.input[:3]):
            keep.append(node)
            continue
        x, scale, zero = (numpy_helper.to_array(inits[n]) for n in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        q = _quantize_array(x, scale, zero, axis)
        graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        folded += 1
        consumers[node.input[0]] -= 1
    del graph.node[:]
    graph.node.extend(keep)
    unused = [i for i in graph.initializer if consumers.get(i.name, 0) <= 0 and _is_float(i)]
    for init in unused:
        if init.name not in {n for node in keep for n in node.input}:
            graph.initializer.remove(init)
    return folded


def _is_float(init: Any) -> bool:
    import onnx

    return init.data_type == onnx.TensorProto.FLOAT


def _quantize_array(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    if scale.ndim == 1 and x.ndim > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    info = np.iinfo(zero.dtype)
    q = np.rint(x / scale) + zero.astype(np.int64)
    return np.clip(q, info.min, info.max).astype(zero.dtype)


def runtime_ops(path: str | Path) -> Counter:
    """Op types of the graph ONNX Runtime actually runs, after its optimizations (QDQ fusion).

    Example:
        >>> import tempfile
        >>> from slimkit.measure import export_onnx
        >>> from slimkit.models import build_model
        >>> f = export_onnx(build_model("mlp", (1, 8, 8), 10), tempfile.mkdtemp() + "/m.onnx",
        ...                 (1, 8, 8))
        >>> runtime_ops(f)["Gemm"] + runtime_ops(f)["FusedGemm"]
        3
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="slimkit-ort-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    return Counter(node.op_type for node in graph.node)


def integer_report(path: str | Path, warn: bool = True) -> dict[str, Any]:
    """Which compute ops ONNX Runtime runs on integer kernels and which stay float.

    Warns, listing them, when some Conv/Gemm/MatMul ops are left in float.

    Example:
        >>> import tempfile
        >>> from slimkit.quant import export_int8, quantize
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
        >>> q = quantize(net, mode="static", data=torch.randn(32, 1, 8, 8))
        >>> f = export_int8(q, tempfile.mkdtemp() + "/q.onnx", (1, 8, 8))
        >>> integer_report(f)["float_ops"]
        {}
    """
    ops = runtime_ops(path)
    integer = {op: n for op, n in ops.items() if op in INTEGER_OPS}
    floating = {op: n for op, n in ops.items() if op in FLOAT_COMPUTE_OPS}
    if not integer:
        raise SlimkitError(
            f"{path}: ONNX Runtime runs no integer kernel on this model (ops: "
            f"{', '.join(sorted(ops))}); check that the model was calibrated"
        )
    if floating and warn:
        listing = ", ".join(f"{op} x{n}" for op, n in sorted(floating.items()))
        warnings.warn(
            f"left in float (no integer kernel, or kept float on purpose): {listing}",
            stacklevel=2,
        )
    return {"integer_ops": integer, "float_ops": floating}


def check_parity(
    model: nn.Module, path: str | Path, x: torch.Tensor, min_top1: float = 0.99
) -> dict[str, float]:
    """Compare the fake-quantized PyTorch model with the ONNX Runtime session on ``x``.

    Raises :class:`SlimkitError` when top-1 agreement is below ``min_top1``: a QDQ file that
    computes something else than the model it claims to be must not be shipped.

    Example:
        >>> import tempfile
        >>> from slimkit.quant import export_int8, quantize
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
        >>> x = torch.randn(32, 1, 8, 8)
        >>> q = quantize(net, mode="static", data=x)
        >>> f = export_int8(q, tempfile.mkdtemp() + "/q.onnx", (1, 8, 8))
        >>> check_parity(q, f, x)["top1_agreement"] >= 0.99
        True
    """
    parity = onnx_parity(model, path, x)
    if parity["top1_agreement"] < min_top1:
        raise SlimkitError(
            f"{path}: ONNX Runtime's integer model agrees with the fake-quantized PyTorch "
            f"model on only {parity['top1_agreement']:.3f} of top-1 predictions (need "
            f"{min_top1}; max abs diff {parity['max_abs_diff']:.4g}). Try reduce_range=true "
            "(7-bit weights avoid int16 saturation on CPUs without VNNI)"
        )
    return parity
