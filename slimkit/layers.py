"""Selecting the layers a compression method applies to, by name pattern and type."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from torch import nn

from slimkit.errors import SlimkitError

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def select_layers(
    model: nn.Module,
    patterns: Sequence[str] | None = None,
    types: tuple[type[nn.Module], ...] = WEIGHTED,
) -> dict[str, nn.Module]:
    """Modules of ``types`` whose qualified names match any of ``patterns`` (fnmatch; all if None).

    A pattern that matches no layer is an error naming it, since a typo would otherwise silently
    compress nothing.

    Example:
        >>> from slimkit.models import build_model
        >>> list(select_layers(build_model("lenet300", (1, 28, 28), 10), ["1", "3"]))
        ['1', '3']
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, types) and name}
    if patterns is None:
        return layers
    chosen: dict[str, nn.Module] = {}
    for pattern in patterns:
        hits = {name: m for name, m in layers.items() if fnmatchcase(name, pattern)}
        if not hits:
            raise SlimkitError(
                f"layer pattern {pattern!r} matches no {'/'.join(t.__name__ for t in types)} "
                f"layer; layers are: {', '.join(layers) or 'none'}"
            )
        chosen.update(hits)
    return dict(sorted(chosen.items(), key=lambda kv: list(layers).index(kv[0])))


def bits_for(name: str, default: int, overrides: dict[str, int]) -> int:
    """The bit width for layer ``name``: the first matching override pattern, else ``default``."""
    for pattern, bits in overrides.items():
        if fnmatchcase(name, pattern):
            return bits
    return default
