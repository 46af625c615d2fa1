"""Registries of model factories: ``factory(input_shape, num_classes, **kwargs) -> nn.Module``.

``MODELS`` is the zoo a user picks from by name. ``BUILDERS`` holds the factories of models that
slimkit's own methods build (a quantized model with its quantizers, a searched architecture):
checkpoints name them so they load back without an import path, but they need the method's
arguments, so the zoo does not list them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from slimkit.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")
BUILDERS: Registry[ModelFactory] = Registry("model builder")
