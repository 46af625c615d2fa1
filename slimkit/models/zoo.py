"""The model zoo: the architectures the compression papers report on.

Every factory takes ``input_shape`` (per example, channels first) and ``num_classes`` first, so
the same name works on any image data set.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.models.registry import MODELS


def _flat(input_shape: Sequence[int]) -> int:
    return int(math.prod(input_shape))


def _mlp_layers(sizes: Sequence[int], dropout: float = 0.0) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return layers


@MODELS.register("mlp")
def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.0,
) -> nn.Module:
    """A fully connected network with ReLU (and optional dropout) between layers.

    Example:
        >>> mlp((1, 8, 8), 10, hidden=(32,))(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    return nn.Sequential(*_mlp_layers([_flat(input_shape), *hidden, num_classes], dropout))


@MODELS.register("lenet300")
def lenet300(
    input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (300, 100)
) -> nn.Module:
    """LeNet-300-100 (LeCun et al. 1998): 784-300-100-10, 266,610 parameters on MNIST.

    Example:
        >>> sum(p.numel() for p in lenet300((1, 28, 28), 10).parameters())
        266610
    """
    return nn.Sequential(*_mlp_layers([_flat(input_shape), *hidden, num_classes]))


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe's MNIST example (used by Han et al. 2015/2016).

    conv 20@5x5 -> max-pool 2 -> conv 50@5x5 -> max-pool 2 -> fc 500 -> ReLU -> fc 10.
    As in Caffe's prototxt there is no non-linearity after the convolutions.

    Example:
        >>> LeNet5((1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        conv: Sequence[int] = (20, 50),
        hidden: int = 500,
    ) -> None:
        super().__init__()
        channels, height, width = _image_shape(input_shape, "lenet5")
        self.features = nn.Sequential(
            nn.Conv2d(channels, conv[0], 5),
            nn.MaxPool2d(2),
            nn.Conv2d(conv[0], conv[1], 5),
            nn.MaxPool2d(2),
        )
        side_h, side_w = (height - 4) // 2, (width - 4) // 2
        side_h, side_w = (side_h - 4) // 2, (side_w - 4) // 2
        if side_h < 1 or side_w < 1:
            raise SlimkitError(
                f"lenet5 needs inputs of at least 16x16 pixels, got {height}x{width}"
            )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(conv[1] * side_h * side_w, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("lenet5")
def lenet5(
    input_shape: Sequence[int], num_classes: int, conv: Sequence[int] = (20, 50), hidden: int = 500
) -> nn.Module:
    """LeNet-5 (Caffe variant): 431,080 parameters on MNIST.

    Example:
        >>> sum(p.numel() for p in lenet5((1, 28, 28), 10).parameters())
        431080
    """
    return LeNet5(input_shape, num_classes, conv, hidden)


class SmallCNN(nn.Module):
    """Two conv-BN-ReLU-pool blocks and a two-layer classifier; fits 8x8 digits and up.

    Example:
        >>> SmallCNN((1, 8, 8), 10, channels=(4, 8))(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
    ) -> None:
        super().__init__()
        in_channels, height, width = _image_shape(input_shape, "cnn-small")
        blocks: list[nn.Module] = []
        for out_channels in channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            in_channels = out_channels
            height, width = height // 2, width // 2
        if height < 1 or width < 1:
            raise SlimkitError(
                f"cnn-small: input {tuple(input_shape)} too small for "
                f"{len(channels)} pooling blocks"
            )
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * height * width, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("cnn-small")
def cnn_small(
    input_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (16, 32),
    hidden: int = 64,
) -> nn.Module:
    """A small CNN for quick experiments (the demo's model).

    Example:
        >>> cnn_small((1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    return SmallCNN(input_shape, num_classes, channels, hidden)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1-conv projection shortcut.

    Example:
        >>> BasicBlock(16, 32, 32, stride=2)(torch.zeros(1, 16, 8, 8)).shape
        torch.Size([1, 32, 4, 4])
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016, section 4.2): 6n+2 layers in three stages.

    Example:
        >>> sum(p.numel() for p in ResNet((3, 32, 32), 10, blocks_per_stage=3).parameters())
        272474
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        blocks_per_stage: int = 3,
        widths: Sequence[int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        depth = 2 * len(widths) * blocks_per_stage + 2  # 20 for the default 3 blocks a stage
        in_channels, _, _ = _image_shape(input_shape, f"resnet{depth}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages, channels = [], widths[0]
        for i, width in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(channels, width, width, stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(x)))


@MODELS.register("resnet20")
def resnet20(
    input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (16, 32, 64)
) -> nn.Module:
    """ResNet-20 for small images (input channels and classes follow the data).

    Example:
        >>> resnet20((3, 32, 32), 10)(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    return ResNet(input_shape, num_classes, 3, widths)


def _image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise SlimkitError(
            f"{model} needs image data shaped (channels, height, width), "
            f"got input shape {tuple(input_shape)}"
        )
    channels, height, width = (int(v) for v in input_shape)
    return channels, height, width
