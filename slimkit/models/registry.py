"""Registries of model factories: ``factory(input_shape, num_classes, **kwargs) -> nn.Module``.

``MODELS`` is the zoo a user picks from. ``WRAPPERS`` holds structures slimkit's own methods build
around a model (a quantized model and its quantizers): checkpoints name them so they load back
without an import path, but they are not architectures to train, so the zoo does not list them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from slimkit.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")
WRAPPERS: Registry[ModelFactory] = Registry("model wrapper")
