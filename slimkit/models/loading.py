"""Load any model a user points slimkit at: import path, checkpoint, TorchScript or ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.models.checkpoint import load_checkpoint, sniff


class OnnxModule(nn.Module):
    """An ONNX file run by ONNX Runtime behind the ``nn.Module`` call interface (inference only)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types
            raise SlimkitError(f"{path}: not a loadable ONNX model ({exc})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.path = Path(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: x.detach().cpu().numpy().astype(np.float32)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def load_model(source: str | Path, *, allow_import: bool = False) -> nn.Module:
    """Load a model from a file slimkit wrote, a TorchScript or ONNX file, or an import path.

    Pickled files (``torch.save`` output) are refused: unpickling runs arbitrary code.

    Args:
        source: A ``.safetensors`` checkpoint, a ``.slim`` archive, a TorchScript ``.pt``, an
            ``.onnx`` file, or
            ``package.module:factory`` (called with no arguments).
        allow_import: Allow a checkpoint whose spec names a ``package.module:factory``.

    Example:
        >>> model = load_model("torch.nn:Identity")
        >>> type(model).__name__
        'Identity'
    """
    path = Path(source)
    if not path.exists():
        if ":" in str(source) and not str(source).startswith(("/", ".")):
            from slimkit.models.spec import model_factory

            model = model_factory(str(source), allow_import=True)()
            if not isinstance(model, nn.Module):
                raise SlimkitError(f"{source!r} did not return a torch.nn.Module")
            return model.eval()
        raise SlimkitError(f"model file {path} does not exist")
    kind = sniff(path)
    if kind == "safetensors":
        return load_checkpoint(path, allow_import=allow_import)
    if kind == "slim":
        from slimkit.archive import load_slim  # the archive builds on models, not the reverse

        return load_slim(path)
    if kind == "torchscript":
        try:
            return torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as exc:
            raise SlimkitError(f"{path}: unreadable TorchScript file ({exc})") from None
    if kind == "onnx":
        return OnnxModule(path)
    if kind == "pickle":
        raise SlimkitError(
            f"{path} is a pickled file; slimkit never unpickles user files. Save "
            "weights with safetensors (slimkit train writes such checkpoints)"
        )
    raise SlimkitError(
        f"{path}: unrecognised model file (expected a slimkit .safetensors "
        "checkpoint, a TorchScript file or an .onnx file)"
    )
