"""Run a model over data in batches and score it: :func:`predict` and :func:`evaluate`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from slimkit.data import Split
from slimkit.errors import SlimkitError
from slimkit.measure._common import eval_mode, first_line, model_device


def _shape_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a forward pass raises when the input has the wrong shape.

    ONNX Runtime's errors do not derive from RuntimeError, so an OnnxModule needs its own.
    """
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return (RuntimeError,)
    return (RuntimeError, InvalidArgument, Fail)


def forward_checked(model: nn.Module, x: Any, shape: Sequence[int]) -> torch.Tensor:
    """``model(x)``, turning a shape mismatch into a :class:`SlimkitError` naming ``shape``.

    Example:
        >>> forward_checked(nn.Linear(4, 2), torch.zeros(3, 4), (4,)).shape
        torch.Size([3, 2])
    """
    try:
        return model(x)
    except _shape_errors() as exc:
        raise SlimkitError(
            f"model expects a different input shape than the data's (C, H, W) = {tuple(shape)}; "
            f"the model said: {first_line(exc)}"
        ) from None


def predict(model: nn.Module, x: torch.Tensor | list[str], batch_size: int = 256) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (no grad, eval mode), computed in batches, on the CPU.

    Example:
        >>> from slimkit.models import build_model
        >>> model = build_model("mlp", (1, 8, 8), 10)
        >>> predict(model, torch.zeros(5, 1, 8, 8), batch_size=2).shape
        torch.Size([5, 10])
    """
    if batch_size < 1:
        raise SlimkitError(f"batch_size must be at least 1, got {batch_size}")
    if len(x) == 0:
        raise SlimkitError("cannot predict on an empty split")
    shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else ()
    device = model_device(model)
    outputs = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size]
            if isinstance(batch, torch.Tensor):
                batch = batch.to(device)
            # Only the first batch can reveal a shape mismatch; later errors are real failures.
            if start == 0:
                outputs.append(forward_checked(model, batch, shape).detach().cpu())
            else:
                outputs.append(model(batch).detach().cpu())
    return torch.cat(outputs)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows whose arg-max equals the label.

    Example:
        >>> accuracy(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0]))
        0.5
    """
    return float((logits.argmax(dim=1) == labels.cpu()).float().mean())


def evaluate(model: nn.Module, split: Split, batch_size: int = 256) -> float:
    """Accuracy of ``model`` on a :class:`~slimkit.data.Split`.

    Example:
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> data = load_data("digits")
        >>> 0.0 <= evaluate(build_model("mlp", data.input_shape, 10), data.test) <= 1.0
        True
    """
    return accuracy(predict(model, split.x, batch_size), split.y)
