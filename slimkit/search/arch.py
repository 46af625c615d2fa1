"""The model families a search space builds: ``searched-mlp`` and ``searched-cnn``.

A sampled architecture is plain JSON (lists of per-layer choices), passed as keyword arguments to
a factory registered in the model zoo. A checkpoint therefore records it in its spec like any zoo
model and rebuilds it without pickle (``slimkit.models.spec``).

Blocks: ``conv`` (conv-BN-activation), ``dwsep`` (depthwise-separable, MobileNet: Howard et al.
2017, arXiv:1704.04861) and ``residual`` (two convolutions with a shortcut: He et al. 2016,
arXiv:1512.03385) for images; ``plain`` (Linear-activation) and ``bn`` (Linear-BN-activation) for
MLPs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.models.registry import BUILDERS

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
}
CNN_BLOCKS = ("conv", "dwsep", "residual")
MLP_BLOCKS = ("plain", "bn")
HEADS = ("gap", "flatten")


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name.

    Example:
        >>> make_activation("gelu")
        GELU(approximate='none')
    """
    if name not in ACTIVATIONS:
        raise SlimkitError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _conv_bn(c_in: int, c_out: int, kernel: int, groups: int = 1) -> list[nn.Module]:
    # No conv bias: the BatchNorm that follows has its own shift.
    conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(c_out)]


class Residual(nn.Module):
    """Two conv-BN layers plus a shortcut (1x1 conv-BN when the channel count changes).

    Example:
        >>> block = Residual(8, 16, 3, "relu")
        >>> block(torch.zeros(1, 8, 6, 6)).shape, block.shortcut is not None
        (torch.Size([1, 16, 6, 6]), True)
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, act: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(c_in, c_out, kernel), make_activation(act), *_conv_bn(c_out, c_out, kernel)
        )
        self.shortcut = nn.Sequential(*_conv_bn(c_in, c_out, 1)) if c_in != c_out else None
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.body(x) + skip)


def conv_block(block: str, c_in: int, c_out: int, kernel: int, act: str) -> nn.Module:
    """One feature block of a searched CNN (spatial size kept; pooling follows it).

    Example:
        >>> conv_block("dwsep", 8, 16, 3, "relu")(torch.zeros(1, 8, 6, 6)).shape
        torch.Size([1, 16, 6, 6])
    """
    if kernel < 1 or kernel % 2 == 0:
        raise SlimkitError(f"kernel sizes must be odd and positive, got {kernel}")
    if block == "conv":
        return nn.Sequential(*_conv_bn(c_in, c_out, kernel), make_activation(act))
    if block == "dwsep":
        depthwise = [*_conv_bn(c_in, c_in, kernel, groups=c_in), make_activation(act)]
        return nn.Sequential(*depthwise, *_conv_bn(c_in, c_out, 1), make_activation(act))
    if block == "residual":
        return Residual(c_in, c_out, kernel, act)
    raise SlimkitError(f"unknown CNN block {block!r}; known: {', '.join(CNN_BLOCKS)}")


def _classifier(
    features: int, hidden: int, num_classes: int, act: str, dropout: float
) -> list[nn.Module]:
    layers: list[nn.Module] = []
    if hidden > 0:
        layers += [nn.Linear(features, hidden), make_activation(act)]
        features = hidden
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return [*layers, nn.Linear(features, num_classes)]


@BUILDERS.register("searched-cnn")
def searched_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    stages: Sequence[dict[str, Any]] = ({"width": 16, "kernel": 3, "block": "conv"},),
    activation: str = "relu",
    dropout: float = 0.0,
    hidden: int = 0,
    head: str = "gap",
) -> nn.Module:
    """A CNN of feature stages, each one block then 2x2 max-pooling, and a classifier head.

    ``stages`` lists ``{"width", "kernel", "block"}`` per stage; ``head`` is ``gap`` (global
    average pooling) or ``flatten``; ``hidden`` > 0 adds a hidden layer to the classifier.
    Pooling stops once the feature map is 1 pixel wide, so deep stacks fit small images.

    Example:
        >>> net = searched_cnn((1, 8, 8), 10, [{"width": 8, "kernel": 3, "block": "residual"}])
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    if len(input_shape) != 3:
        raise SlimkitError(f"searched-cnn needs image input (C, H, W), got {tuple(input_shape)}")
    if head not in HEADS:
        raise SlimkitError(f"unknown head {head!r}; known: {', '.join(HEADS)}")
    channels, height, width = input_shape
    layers: list[nn.Module] = []
    for stage in stages:
        layers.append(
            conv_block(stage["block"], channels, stage["width"], stage["kernel"], activation)
        )
        channels = stage["width"]
        if min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
    if head == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        features = channels
    else:
        layers.append(nn.Flatten())
        features = channels * height * width
    return nn.Sequential(*layers, *_classifier(features, hidden, num_classes, activation, dropout))


@BUILDERS.register("searched-mlp")
def searched_mlp(
    input_shape: Sequence[int],
    num_classes: int,
    layers: Sequence[dict[str, Any]] = ({"width": 64, "block": "plain"},),
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Module:
    """A fully connected network: per hidden layer ``{"width", "block"}``, block ``plain``
    (Linear-activation) or ``bn`` (Linear-BatchNorm-activation), dropout after each.

    Example:
        >>> net = searched_mlp((1, 8, 8), 10, [{"width": 32, "block": "bn"}], "silu", 0.1)
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    modules: list[nn.Module] = [nn.Flatten()]
    features = int(math.prod(input_shape))
    for layer in layers:
        if layer["block"] not in MLP_BLOCKS:
            raise SlimkitError(f"unknown MLP block {layer['block']!r}; known: {MLP_BLOCKS}")
        bn = layer["block"] == "bn"
        modules.append(nn.Linear(features, layer["width"], bias=not bn))
        if bn:
            modules.append(nn.BatchNorm1d(layer["width"]))
        modules.append(make_activation(activation))
        if dropout > 0:
            modules.append(nn.Dropout(dropout))
        features = layer["width"]
    return nn.Sequential(*modules, nn.Linear(features, num_classes))
