"""``export --format onnx-int8``: the deployable int8 ONNX file of any model.

- A model quantized statically (or by QAT) is written in QDQ form with its calibrated scales;
  the parity of ONNX Runtime with the fake-quantized model is checked and must hold.
- A dynamically quantized model, or a plain float model (nothing to calibrate with), is written
  with int8 weights and run-time activation quantization (DynamicQuantizeMatMul).
- A weight-only model keeps its 8- or 4-bit codes in ``MatMulNBits`` (float compute,
  :mod:`slimkit.quant.onnx_nbits`), checked for parity like a static one.
Every file is checked to run integer kernels in ONNX Runtime.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.measure import export_onnx
from slimkit.measure._common import random_input
from slimkit.quant.api import quant_info
from slimkit.quant.config import QuantConfig
from slimkit.quant.fake import ActFakeQuant, DynamicActFakeQuant, FakeQuant
from slimkit.quant.onnx_qdq import check_parity, export_qdq, integer_report

PARITY_ROWS = 256


def export_int8(
    model: nn.Module,
    path: str | Path,
    input_shape: Sequence[int],
    *,
    check_inputs: torch.Tensor | None = None,
    min_top1: float | None = None,
) -> Path:
    """Write the int8 ONNX file of ``model`` and check it (integer kernels, parity).

    Example:
        >>> import tempfile
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> from slimkit.quant import quantize
        >>> data = load_data("digits")
        >>> q = quantize(build_model("cnn-small", data.input_shape, 10), data=data)
        >>> export_int8(q, tempfile.mkdtemp() + "/q.onnx", data.input_shape).suffix
        '.onnx'
    """
    path = Path(path)
    info = quant_info(model)
    mode = info["config"]["mode"] if info else None
    if mode in ("static", "qat"):
        _check_exportable(model)
        export_qdq(model, path, input_shape)
    elif mode == "weight-only":
        from slimkit.quant.onnx_nbits import export_weight_only

        export_weight_only(model, path, lambda plain, raw: export_onnx(plain, raw, input_shape))
    else:
        _export_dynamic(model, path, input_shape, info)
    if mode in ("static", "qat", "weight-only"):  # the PyTorch model is what ORT must compute
        x = check_inputs if check_inputs is not None else random_input(64, input_shape, _cpu())
        threshold = min_top1 if min_top1 is not None else info["config"]["min_top1_agreement"]
        check_parity(model, path, x[:PARITY_ROWS], threshold)
    integer_report(path)
    return path


def _cpu() -> torch.device:
    return torch.device("cpu")


def _check_exportable(model: nn.Module) -> None:
    for quant in model.modules():
        if isinstance(quant, ActFakeQuant) and quant.mode == "quant" and quant.scheme.bits != 8:
            raise SlimkitError(
                f"ONNX QDQ export needs 8-bit activations, got {quant.scheme.bits}-bit; "
                "evaluate lower bit widths in PyTorch, or use weight-only int4"
            )


def _export_dynamic(model: nn.Module, path: Path, input_shape, info: dict | None) -> None:
    from slimkit.quant.dynamic import quantize_onnx_dynamic

    cfg = QuantConfig(**info["config"]) if info else QuantConfig(mode="dynamic")
    if info is None:
        warnings.warn(
            "exporting a float model as onnx-int8: no calibration data, so weights are int8 "
            "and activations are quantized at run time (dynamic); quantize statically first "
            "for a fully integer model",
            stacklevel=3,
        )
    float_layers = list(cfg.skip)
    with _quantizers_off(model), tempfile.TemporaryDirectory(prefix="slimkit-dyn-") as tmp:
        raw = export_onnx(model, Path(tmp) / "float.onnx", input_shape)
        done = quantize_onnx_dynamic(raw, path, cfg, skip=float_layers)
    if done["quantized"] == 0:
        raise SlimkitError("the model has no Linear/MatMul with constant weights to quantize")


class _quantizers_off:
    """Export the float graph of a dynamically quantized model (ONNX ops do the quantizing)."""

    def __init__(self, model: nn.Module) -> None:
        self.quants = [
            m for m in model.modules() if isinstance(m, (FakeQuant, DynamicActFakeQuant))
        ]
        self.modes: list[str] = []

    def __enter__(self) -> None:
        self.modes = [q.mode for q in self.quants]
        for q in self.quants:
            q.mode = "off"

    def __exit__(self, *exc: object) -> None:
        for q, mode in zip(self.quants, self.modes, strict=True):
            q.mode = mode


def register_format() -> bool:
    """Register ``onnx-int8`` in :data:`slimkit.export.FORMATS` (once); False while
    ``slimkit.export`` is still being imported (its registry does not exist yet).

    Example:
        >>> from slimkit.export import FORMATS
        >>> register_format(), "onnx-int8" in FORMATS
        (True, True)
    """
    import sys

    module = sys.modules.get("slimkit.export")
    if module is None:
        import slimkit.export as module
    formats = getattr(module, "FORMATS", None)
    if formats is None:
        return False
    if "onnx-int8" not in formats:
        formats.register("onnx-int8")(export_int8)
    return True


register_format()
