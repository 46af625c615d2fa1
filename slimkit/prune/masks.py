"""Pruning masks as ``torch.nn.utils.parametrize`` parametrizations, and baking them in.

A masked layer computes with ``weight = original * mask``. The gradient reaching the original
weight is multiplied by the mask too, so any optimiser leaves the effective pruned weights at
exactly zero: :func:`slimkit.train.fit` needs no special case. :func:`finalize` removes the
parametrizations, leaving plain layers (with zeros) that checkpoint like any other model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


class WeightMask(nn.Module):
    """The parametrization ``w -> w * mask``; ``mask`` is a buffer, saved with the model.

    Example:
        >>> WeightMask(torch.tensor([1.0, 0.0]))(torch.tensor([3.0, 4.0])).tolist()
        [3.0, 0.0]
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().clone().to(torch.float32))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)


def mask_of(module: nn.Module, name: str = "weight") -> WeightMask | None:
    """The :class:`WeightMask` on ``module.<name>``, or None when it has none.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> mask_of(layer) is None
        True
    """
    if not parametrize.is_parametrized(module, name):
        return None
    for item in module.parametrizations[name]:
        if isinstance(item, WeightMask):
            return item
    return None


def set_mask(module: nn.Module, mask: torch.Tensor, name: str = "weight") -> WeightMask:
    """Mask ``module.<name>`` with ``mask`` (1 keeps, 0 prunes), replacing an earlier mask.

    Updating in place keeps the buffer an optimiser or a step hook already holds.

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> _ = set_mask(layer, torch.tensor([[1.0, 0.0]]))
        >>> layer.weight[0, 1].item() == 0
        True
    """
    existing = mask_of(module, name)
    if existing is not None:
        with torch.no_grad():
            existing.mask.copy_(mask)
        return existing
    weight = getattr(module, name)
    parametrization = WeightMask(mask.to(weight.device))
    parametrize.register_parametrization(module, name, parametrization)
    return parametrization


def effective_weight(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The weight a layer computes with (masked weights read as zero), detached.

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> _ = set_mask(layer, torch.tensor([[1.0, 0.0]]))
        >>> (effective_weight(layer) == 0).tolist(), effective_weight(layer).requires_grad
        ([[False, True]], False)
    """
    with torch.no_grad():
        return getattr(module, name).detach()


def masked_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layers of ``model`` that carry a :class:`WeightMask` on their weight.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
        >>> _ = set_mask(net[2], torch.ones(2, 2))
        >>> list(masked_layers(net))
        ['2']
    """
    return {name: m for name, m in model.named_modules() if mask_of(m) is not None}


def finalize(model: nn.Module) -> nn.Module:
    """Bake every mask into its weight and remove the parametrizations; returns ``model``.

    Afterwards the model is a plain module whose pruned weights are stored zeros, so it saves
    with :func:`slimkit.save_checkpoint` and exports to ONNX like any other. A weight that carries
    other parametrizations besides the mask (e.g. a fake quantizer) keeps them all; only a lone
    mask is removed.

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> _ = set_mask(layer, torch.tensor([[1.0, 0.0]]))
        >>> parametrize.is_parametrized(finalize(layer))
        False
    """
    for module in list(model.modules()):
        if mask_of(module) is None:
            continue
        if len(module.parametrizations["weight"]) == 1:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def sparsity(model: nn.Module, layers: dict[str, nn.Module] | None = None) -> float:
    """Share of zero entries among the weights of ``layers`` (default: every masked layer).

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> _ = set_mask(layer, torch.tensor([[1.0, 0.0]]))
        >>> sparsity(layer, {"": layer})
        0.5
    """
    layers = masked_layers(model) if layers is None else layers
    zeros = total = 0
    for module in layers.values():
        weight = effective_weight(module)
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / total if total else 0.0
