"""Rebuild layers with fewer channels: the sliced copies of Conv, Linear and BatchNorm layers.

New layers are plain ``nn.Conv*`` / ``nn.Linear`` / ``nn.BatchNorm*`` modules, so a slimkit
checkpoint records their new shapes in the architecture spec and loads them back unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

_CONV_ARGS = ("kernel_size", "stride", "padding", "dilation", "padding_mode")


def _like(module: nn.Module) -> dict:
    weight = next(module.parameters(), None)
    if weight is None:
        weight = next(module.buffers())
    return {"device": weight.device, "dtype": weight.dtype}


def shrink_layer(module: nn.Module, keep_out: torch.Tensor, keep_in: torch.Tensor) -> nn.Module:
    """A Conv (groups=1) or Linear keeping output rows ``keep_out`` and inputs ``keep_in``.

    Example:
        >>> layer = shrink_layer(nn.Linear(4, 3), torch.tensor([0, 2]), torch.tensor([1, 3]))
        >>> tuple(layer.weight.shape)
        (2, 2)
    """
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        new = nn.Linear(len(keep_in), len(keep_out), bias=bias, **_like(module))
    else:
        args = {a: getattr(module, a) for a in _CONV_ARGS}
        new = type(module)(len(keep_in), len(keep_out), bias=bias, **args, **_like(module))
    with torch.no_grad():
        new.weight.copy_(module.weight[keep_out][:, keep_in])
        if bias:
            new.bias.copy_(module.bias[keep_out])
    return new.train(module.training).requires_grad_(module.weight.requires_grad)


def shrink_channelwise(module: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A BatchNorm or depthwise conv keeping channels ``keep``.

    Example:
        >>> bn = shrink_channelwise(nn.BatchNorm2d(4), torch.tensor([0, 3]))
        >>> bn.num_features
        2
    """
    n = len(keep)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        args = {a: getattr(module, a) for a in _CONV_ARGS}
        new = type(module)(n, n, groups=n, bias=module.bias is not None, **args, **_like(module))
        tensors = ("weight", "bias")
    else:
        new = type(module)(
            n, module.eps, module.momentum, module.affine, module.track_running_stats,
            **_like(module),
        )  # fmt: skip
        tensors = ("weight", "bias", "running_mean", "running_var")
    with torch.no_grad():
        for name in tensors:
            old = getattr(module, name, None)
            if isinstance(old, torch.Tensor):
                getattr(new, name).copy_(old[keep])
        tracked = getattr(module, "num_batches_tracked", None)
        if isinstance(tracked, torch.Tensor):
            new.num_batches_tracked.copy_(tracked)
    return new.train(module.training)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted path ``name`` inside ``model``.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
        >>> replace_module(net, "0", nn.Linear(4, 2))
        >>> net[0].out_features
        2
    """
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
