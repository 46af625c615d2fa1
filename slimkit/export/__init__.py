"""Deployable files: a registry of export formats and the ``export`` stage.

A format is ``writer(model, path, input_shape) -> Path``; quantized and archive formats register
themselves here from their own modules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from slimkit.archive import save_slim
from slimkit.errors import SlimkitError
from slimkit.measure import export_onnx, onnx_parity
from slimkit.recipe.stage import STAGES, Stage, StageContext
from slimkit.registry import Registry

Writer = Callable[[nn.Module, Path, Sequence[int]], Path]
FORMATS: Registry[Writer] = Registry("export format")

FORMATS.register("onnx")(export_onnx)
FORMATS.register("slim")(save_slim)


def export(
    model: nn.Module, path: str | Path, input_shape: Sequence[int], format: str = "onnx"
) -> Path:
    """Write ``model`` as a deployable file of the given format.

    Example:
        >>> import tempfile
        >>> from slimkit.models import build_model
        >>> model = build_model("mlp", (1, 8, 8), 10)
        >>> export(model, tempfile.mkdtemp() + "/m.onnx", (1, 8, 8)).suffix
        '.onnx'
    """
    return FORMATS.get(format)(model, Path(path), tuple(input_shape))


class ExportConfig(BaseModel):
    """Which format to write, and how closely ONNX Runtime must agree with PyTorch.

    Example:
        >>> ExportConfig(format="slim").min_top1_agreement
        0.99
    """

    model_config = ConfigDict(extra="forbid")

    format: str = "onnx"
    min_top1_agreement: float = Field(0.99, ge=0, le=1)

    @field_validator("format")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"unknown format {value!r}; known: {', '.join(FORMATS.names())}")
        return value


@STAGES.register("export")
class ExportStage(Stage):
    """Write the current model to ``model.<suffix>`` in the output folder and check parity."""

    Config = ExportConfig

    def run(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        fmt = self.config.format
        suffix = ".slim" if fmt == "slim" else ".onnx"
        path = export(model, ctx.stage_dir / f"model{suffix}", ctx.data.input_shape, fmt)
        if path.suffix == ".onnx":
            parity = onnx_parity(model, path, ctx.data.test.x[:256])
            ctx.info["parity"] = parity
            if parity["top1_agreement"] < self.config.min_top1_agreement:
                raise SlimkitError(
                    f"export: ONNX Runtime agrees with PyTorch on only "
                    f"{parity['top1_agreement']:.3f} of top-1 predictions"
                )
        ctx.artifact = path
        return model
