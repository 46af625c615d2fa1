"""ONNX: export a PyTorch model, open it in ONNX Runtime, count its weights, check parity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.io import atomic_path
from slimkit.measure._common import eval_mode, first_line, model_device, quiet, root_cause
from slimkit.measure.predict import predict


def export_onnx(
    model: nn.Module, path: str | Path, input_shape: Sequence[int], *, opset: int | None = None
) -> Path:
    """Export ``model`` to one self-contained ONNX file with a dynamic batch axis.

    Uses the torch.export-based exporter; input ``input``, output ``logits``. The model is
    exported in eval mode and left in the mode it was in.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()  # deleted once garbage-collected
        >>> from slimkit.models import build_model
        >>> model = build_model("mlp", (1, 8, 8), 10)
        >>> export_onnx(model, tmp.name + "/mlp.onnx", (1, 8, 8)).suffix
        '.onnx'
    """
    path = Path(path)
    # Batch 2, not 1: torch.export specialises size-1 dimensions, which would fix the batch.
    example = torch.zeros(2, *input_shape, device=model_device(model))
    with eval_mode(model), atomic_path(path) as tmp:
        try:
            with quiet():
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    dynamo=True,
                    input_names=["input"],
                    output_names=["logits"],
                    opset_version=opset,
                    external_data=False,
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    verbose=False,
                    report=False,
                )
        except Exception as exc:  # the exporter raises many types; all mean "cannot export"
            raise SlimkitError(f"cannot export the model to ONNX: {root_cause(exc)}") from None
    return path


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session on ``path`` (``threads`` intra-op, one inter-op thread).

    Example:
        >>> import onnx, tempfile
        >>> path = tempfile.mkdtemp() + "/relu.onnx"
        >>> onnx.save(onnx.parser.parse_model('<ir_version: 8, opset_import: ["": 13]> relu'
        ...     " (float[N, 3] x) => (float[N, 3] y) { y = Relu(x) }"), path)
        >>> ort_session(path, threads=1).get_inputs()[0].shape
        ['N', 3]
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT's warnings are noise here
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise SlimkitError(f"{path}: not a loadable ONNX model ({first_line(exc)})") from None


def fixed_batch(session: Any) -> int | None:
    """The batch size an ONNX input is fixed to, or None when its batch axis is dynamic.

    Example:
        >>> import onnx, tempfile
        >>> path = tempfile.mkdtemp() + "/relu.onnx"
        >>> onnx.save(onnx.parser.parse_model('<ir_version: 8, opset_import: ["": 13]> relu'
        ...     " (float[2, 3] x) => (float[2, 3] y) { y = Relu(x) }"), path)
        >>> fixed_batch(ort_session(path))
        2
    """
    shape = session.get_inputs()[0].shape
    return shape[0] if shape and isinstance(shape[0], int) else None


def run_session(session: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run ``session`` on ``x`` in batches (of the ONNX file's fixed batch size, if it has one).

    Example:
        >>> import onnx, tempfile
        >>> path = tempfile.mkdtemp() + "/relu.onnx"
        >>> onnx.save(onnx.parser.parse_model('<ir_version: 8, opset_import: ["": 13]> relu'
        ...     " (float[N, 3] x) => (float[N, 3] y) { y = Relu(x) }"), path)
        >>> run_session(ort_session(path), np.ones((5, 3), np.float32), batch_size=2).shape
        (5, 3)
    """
    name = session.get_inputs()[0].name
    fixed = fixed_batch(session)
    step = fixed or batch_size
    chunks = []
    for i in range(0, len(x), step):
        part = x[i : i + step]
        if fixed and len(part) < fixed:  # a fixed batch takes full batches only: pad, then trim
            pad = np.zeros((fixed - len(part), *part.shape[1:]), part.dtype)
            chunks.append(session.run(None, {name: np.concatenate([part, pad])})[0][: len(part)])
        else:
            chunks.append(session.run(None, {name: part})[0])
    return np.concatenate(chunks)


def onnx_weight_counts(path: str | Path) -> tuple[int, int]:
    """(entries, non-zero entries) of the weight initializers of an ONNX file.

    64- and 32-bit integer initializers are left out: they hold shapes and axes, not weights.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()  # deleted once garbage-collected
        >>> from slimkit.models import build_model
        >>> path = export_onnx(build_model("mlp", (1, 8, 8), 10), tmp.name + "/m.onnx",
        ...                    (1, 8, 8))
        >>> onnx_weight_counts(path)[0]
        50826
    """
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # protobuf decode errors and missing external data alike
        raise SlimkitError(f"{path}: not a readable ONNX file ({first_line(exc)})") from None
    index_types = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    arrays = [
        numpy_helper.to_array(init)
        for init in graph.initializer
        if init.data_type not in index_types
    ]
    return sum(a.size for a in arrays), sum(int(np.count_nonzero(a)) for a in arrays)


def onnx_parity(model: nn.Module, onnx_path: str | Path, x: torch.Tensor) -> dict[str, float]:
    """How closely the ONNX Runtime session reproduces the PyTorch model on inputs ``x``.

    Returns ``max_abs_diff`` (largest absolute logit difference) and ``top1_agreement`` (share
    of rows whose arg-max agrees).

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()  # deleted once garbage-collected
        >>> from slimkit.models import build_model
        >>> model = build_model("mlp", (1, 8, 8), 10)
        >>> path = export_onnx(model, tmp.name + "/m.onnx", (1, 8, 8))
        >>> onnx_parity(model, path, torch.randn(4, 1, 8, 8))["top1_agreement"]
        1.0
    """
    expected = predict(model, x).numpy()
    got = run_session(ort_session(onnx_path), x.detach().cpu().numpy().astype(np.float32))
    if got.shape != expected.shape:
        raise SlimkitError(
            f"{onnx_path}: ONNX output shape {got.shape} differs from the model's {expected.shape}"
        )
    return {
        "max_abs_diff": float(np.abs(got - expected).max()),
        "top1_agreement": float((got.argmax(axis=1) == expected.argmax(axis=1)).mean()),
    }
