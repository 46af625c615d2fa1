"""Truncated-SVD factorization of layers, chosen by rank or by retained energy."""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.layers import select_layers


class FactorizeConfig(BaseModel):
    """Which layers to factorize and to what rank.

    Give ``rank`` (a fixed rank, capped per layer) or ``energy`` (keep the smallest rank whose
    singular values hold this share of the squared Frobenius norm).

    Example:
        >>> FactorizeConfig(energy=0.9).rank is None
        True
    """

    model_config = ConfigDict(extra="forbid")

    rank: int | None = Field(None, ge=1)
    energy: float | None = Field(None, gt=0, le=1)
    layers: list[str] | None = Field(None, description="name patterns; None = every Conv/Linear")
    min_saving: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="skip a layer unless it saves at least this share of its parameters",
    )

    @model_validator(mode="after")
    def _one_target(self) -> FactorizeConfig:
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give exactly one of 'rank' or 'energy'")
        return self


def choose_rank(singular: torch.Tensor, rank: int | None, energy: float | None) -> int:
    """The rank to keep: ``rank`` capped at the matrix rank, or the smallest reaching ``energy``.

    Example:
        >>> choose_rank(torch.tensor([3.0, 1.0, 0.1]), None, 0.85)
        1
    """
    if rank is not None:
        return min(rank, singular.numel())
    share = torch.cumsum(singular**2, 0) / (singular**2).sum()
    return int(torch.searchsorted(share, torch.tensor(energy) - 1e-7).item()) + 1


def factorize_layer(layer: nn.Module, rank: int) -> nn.Sequential:
    """Two layers computing the best rank-``rank`` approximation of ``layer``.

    Example:
        >>> fc = nn.Linear(64, 32)
        >>> two = factorize_layer(fc, 32)  # full rank: the same function
        >>> x = torch.randn(4, 64)
        >>> bool(torch.allclose(two(x), fc(x), atol=1e-4))
        True
    """
    weight = layer.weight.detach()
    matrix = weight.reshape(weight.shape[0], -1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    first_w, second_w = root[:, None] * vh[:rank], u[:, :rank] * root[None, :]
    if isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, rank, bias=False)
        second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    elif isinstance(layer, nn.Conv2d) and layer.groups == 1:
        first = nn.Conv2d(
            layer.in_channels,
            rank,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            bias=False,
            padding_mode=layer.padding_mode,
        )
        second = nn.Conv2d(rank, layer.out_channels, 1, bias=layer.bias is not None)
        first_w, second_w = first_w.reshape(first.weight.shape), second_w[:, :, None, None]
    else:
        raise SlimkitError(
            f"cannot factorize {type(layer).__name__} (grouped convolutions and "
            "other layer types are left whole)"
        )
    with torch.no_grad():
        first.weight.copy_(first_w)
        second.weight.copy_(second_w)
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def factorize(model: nn.Module, config: FactorizeConfig) -> dict[str, dict[str, int]]:
    """Factorize the selected layers of ``model`` in place where it saves parameters.

    Returns, per factorized layer, the chosen rank and parameters before and after; layers where
    factorization would not save ``min_saving`` of the parameters are left whole.

    Example:
        >>> from slimkit.models import build_model
        >>> model = build_model("lenet300", (1, 28, 28), 10)
        >>> factorize(model, FactorizeConfig(rank=20, layers=["1"]))["1"]["rank"]
        20
    """
    done = {}
    layers = select_layers(model, config.layers or ("*",), types=("Linear", "Conv2d"))
    for name, layer in layers.items():
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            continue  # grouped and depthwise convolutions are left whole
        matrix = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        rank = choose_rank(torch.linalg.svdvals(matrix), config.rank, config.energy)
        before = matrix.numel()
        after = rank * sum(matrix.shape)
        if after > (1 - config.min_saving) * before:
            continue
        parent, _, child = name.rpartition(".")
        setattr(
            model.get_submodule(parent) if parent else model, child, factorize_layer(layer, rank)
        )
        done[name] = {"rank": rank, "params_before": before, "params_after": after}
    return done


def rank_error(matrix: torch.Tensor, rank: int) -> float:
    """Relative Frobenius error of the best rank-``rank`` approximation (sqrt of dropped energy).

    Example:
        >>> round(rank_error(torch.diag(torch.tensor([3.0, 4.0])), 1), 3)
        0.6
    """
    s = torch.linalg.svdvals(matrix)
    return math.sqrt(float((s[rank:] ** 2).sum() / (s**2).sum()))
