"""Seeing what each named layer receives while calibration data runs through a model: the one
place that registers, and always removes, the forward pre-hooks calibration statistics need."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from slimkit.errors import SlimkitError


def watch_inputs(
    model: nn.Module,
    layers: list[str],
    run: Callable[[nn.Module], None],
    visit: Callable[[str, nn.Module, torch.Tensor], None],
) -> None:
    """Call ``visit(name, layer, input)`` for every call of each named layer while
    ``run(model)`` feeds data (no gradients); an error names the layers never reached.

    The input is as the layer's forward receives it: after the layer's own forward pre-hooks,
    such as SmoothQuant's scaling.

    Example:
        >>> seen = []
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> watch_inputs(net, ["1"], lambda m: m(torch.ones(3, 2)),
        ...              lambda name, layer, x: seen.append((name, tuple(x.shape))))
        >>> seen
        [('1', (3, 2))]
    """
    reached: set[str] = set()
    handles = []
    for name in layers:

        def hook(module: nn.Module, args: tuple, name: str = name) -> None:
            reached.add(name)
            visit(name, module, args[0].detach())

        handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            run(model)
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in layers if name not in reached]
    if missing:
        raise SlimkitError(f"calibration never reached layers {missing[:3]}")
