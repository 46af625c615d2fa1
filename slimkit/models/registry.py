"""Registry of zoo architectures: ``factory(input_shape, num_classes, **kwargs) -> nn.Module``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from slimkit.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")
