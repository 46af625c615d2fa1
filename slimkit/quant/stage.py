"""The ``quantize`` recipe stage, and the ``onnx-int8`` export format registration.

Recipe example::

    - kind: quantize
      mode: static              # static | dynamic | weight-only | qat
      observer: percentile      # minmax | moving-average | percentile | mse | entropy
      calibration_batches: 8
      accuracy_budget: 0.005    # optional: keep sensitive layers float within 0.5 point

The stage quantizes the model, writes ``model.int8.onnx`` into its folder as the stage's
artifact, checks ONNX Runtime's parity with the fake-quantized model and records which ops run
on integer kernels. A weight-only model's artifact is ``model.packed.safetensors``, its ONNX
file (``MatMulNBits``) is what the report times.
"""

from __future__ import annotations

import sys

from torch import nn

from slimkit.measure import evaluate
from slimkit.quant.api import quant_info, quantize
from slimkit.quant.config import QuantConfig
from slimkit.quant.onnx_qdq import integer_report
from slimkit.quant.weight_only import save_packed
from slimkit.recipe.stage import STAGES, Stage, StageContext

# slimkit.export imports the stage registry while it is itself being imported; the onnx-int8
# format can only be registered once its FORMATS exists (see slimkit.quant.export).
if getattr(sys.modules.get("slimkit.export"), "FORMATS", None) is not None:
    from slimkit.quant.export import register_format

    register_format()


@STAGES.register("quantize")
class QuantizeStage(Stage):
    """Quantize the current model and write its deployable int8 file.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> from slimkit.recipe.stage import StageContext
        >>> data, out = load_data("digits"), Path(tempfile.mkdtemp())
        >>> ctx = StageContext(data, out, out)
        >>> stage = QuantizeStage(QuantConfig(mode="dynamic"))
        >>> _ = stage.run(build_model("mlp", (1, 8, 8), 10), ctx)
        >>> ctx.artifact.name
        'model.int8.onnx'
    """

    Config = QuantConfig

    def run(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        config: QuantConfig = self.config
        from slimkit.quant.export import export_int8

        quantized = quantize(model, config, ctx.data)
        x = ctx.data.test.x if not isinstance(ctx.data.test.x, list) else None
        onnx = export_int8(
            quantized, ctx.stage_dir / "model.int8.onnx", ctx.data.input_shape, check_inputs=x
        )
        ctx.info["integer_ops"] = integer_report(onnx, warn=False)
        ctx.artifact = onnx
        if config.mode == "weight-only":  # its smallest file; the report times the ONNX one
            ctx.artifact = save_packed(quantized, ctx.stage_dir / "model.packed.safetensors")
            ctx.info["onnx"] = str(onnx.relative_to(ctx.out_dir))
        ctx.info["float_layers"] = quant_info(quantized)["float_layers"]
        ctx.info["float_metric"] = round(evaluate(model, ctx.data.test), 6)
        return quantized
