"""Size counts: parameters, non-zero parameters, MACs per example and bytes on disk."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimkit.errors import SlimkitError
from slimkit.measure._common import eval_mode, model_device
from slimkit.measure.predict import forward_checked

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def count_params(model: nn.Module) -> int:
    """All parameter entries of the model (shared parameters counted once).

    Example:
        >>> from slimkit.models import build_model
        >>> count_params(build_model("lenet300", (1, 28, 28), 10))
        266610
    """
    return sum(p.numel() for p in model.parameters())


def _pruned(module: nn.Module, name: str, param: torch.Tensor) -> torch.Tensor:
    """``X_orig * X_mask`` for a ``torch.nn.utils.prune`` weight, else the parameter itself.

    Recomputed from the mask rather than read from ``module.X``, which is refreshed only by the
    next forward pass and so is stale after a mask was edited in place.
    """
    base = name.removesuffix("_orig")
    mask = getattr(module, f"{base}_mask", None) if base != name else None
    return param * mask if isinstance(mask, torch.Tensor) else param


def _effective_tensors(model: nn.Module) -> list[torch.Tensor]:
    """One tensor per parameter, replacing masked or parametrized weights by what forward uses.

    ``torch.nn.utils.prune`` keeps ``weight_orig`` (dense) and a mask; ``parametrize`` keeps
    ``parametrizations.weight.original``. In both cases ``module.weight`` is the effective weight.
    """
    tensors: list[torch.Tensor] = []
    seen: set[int] = set()
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for name, plist in module.parametrizations.items():
                seen.update(id(p) for p in plist.parameters())
                tensors.append(getattr(module, name))
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            tensors.append(_pruned(module, name, param))
    return tensors


def count_nonzero(model: nn.Module) -> int:
    """Non-zero entries of the weights the model actually computes with.

    Example:
        >>> layer = nn.Linear(4, 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight[0].zero_()
        >>> count_nonzero(layer)
        6
    """
    with torch.no_grad():
        return sum(int(torch.count_nonzero(t)) for t in _effective_tensors(model))


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one call of a Conv or Linear layer: output elements times MACs per element."""
    if isinstance(module, _CONVS):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
    else:  # nn.Linear: each output element is a dot product over in_features
        per_output = module.in_features
    return output.numel() * per_output


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates per example of the Conv and Linear layers (biases not counted).

    Counted with forward hooks on a batch of one zero example, so shapes follow whatever the model
    does (padding, strides, pooling, layers called twice).

    Example:
        >>> from slimkit.models import build_model
        >>> count_macs(build_model("lenet300", (1, 28, 28), 10), (1, 28, 28))
        266200
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise SlimkitError("MACs are counted with forward hooks, which TorchScript models lack")
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, output)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (*_CONVS, nn.Linear))
    ]
    x = torch.zeros(1, *input_shape, device=model_device(model))
    try:
        with eval_mode(model), torch.no_grad():
            forward_checked(model, x, input_shape)
    finally:
        for handle in handles:
            handle.remove()
    return total


def file_size(path: str | Path) -> int:
    """Bytes on disk of a real file.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     _ = f.write(b"12345"); f.flush()
        ...     file_size(f.name)
        5
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise SlimkitError(f"cannot size {path}: it {what}")
    return path.stat().st_size
