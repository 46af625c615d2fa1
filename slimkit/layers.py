"""Which layers a compression method applies to: name patterns (fnmatch or ``re:`` regex) and
layer types. Shared by pruning, weight sharing and factorization."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from torch import nn

from slimkit.errors import SlimkitError

PRUNABLE_TYPES: dict[str, type[nn.Module]] = {
    "Linear": nn.Linear,
    "Conv1d": nn.Conv1d,
    "Conv2d": nn.Conv2d,
    "Conv3d": nn.Conv3d,
}
DEFAULT_TYPES = tuple(PRUNABLE_TYPES)


def matches(name: str, pattern: str) -> bool:
    """Whether a layer name matches a pattern: shell-style (``fc*``) or ``re:<regex>``.

    A regex must match the whole name, as a shell pattern does.

    Example:
        >>> matches("features.0", "features.*"), matches("fc1", "re:fc[12]")
        (True, True)
    """
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def check_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is valid; a bad regex is an error that quotes it.

    Example:
        >>> check_pattern("re:features[.][0-9]+")
        're:features[.][0-9]+'
    """
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as exc:
            raise ValueError(f"layer pattern {pattern!r} is not a valid regex: {exc}") from None
    return pattern


def _typed_layers(model: nn.Module, types: Sequence[str]) -> dict[str, nn.Module]:
    classes = tuple(PRUNABLE_TYPES[t] for t in types)
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, classes) and name  # the root itself is never a layer to prune
    }


def select_layers(
    model: nn.Module,
    layers: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    types: Sequence[str] = DEFAULT_TYPES,
) -> dict[str, nn.Module]:
    """The layers of ``model`` selected by ``layers`` minus ``exclude``, by name, in module order.

    A pattern in ``layers`` that matches no layer of the chosen types is an error naming it and
    listing the candidates, so a typo never silently compresses nothing.

    Example:
        >>> from slimkit.models import build_model
        >>> model = build_model("lenet300", (1, 28, 28), 10)
        >>> list(select_layers(model, ["*"], exclude=["5"]))
        ['1', '3']
    """
    candidates = _typed_layers(model, types)
    if not candidates:
        raise SlimkitError(
            f"the model has no layer of the types {list(types)}; choose other 'types' "
            f"(known: {', '.join(PRUNABLE_TYPES)})"
        )
    for pattern in [*layers, *exclude]:
        if not any(matches(name, pattern) for name in candidates):
            raise SlimkitError(
                f"layer pattern {pattern!r} matches no {'/'.join(types)} layer; "
                f"the model's layers are: {_listing(candidates)}"
            )
    chosen = {
        name: module
        for name, module in candidates.items()
        if any(matches(name, p) for p in layers) and not any(matches(name, p) for p in exclude)
    }
    if not chosen:
        raise SlimkitError("'exclude' removes every selected layer; nothing is left to compress")
    return chosen


def _listing(names: dict[str, nn.Module], limit: int = 12) -> str:
    shown = list(names)[:limit]
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(shown) + more


def bits_for(name: str, default: int, overrides: dict[str, int]) -> int:
    """The bit width for layer ``name``: the first matching override pattern, else ``default``.

    Example:
        >>> bits_for("features.0", 5, {"features.*": 8})
        8
    """
    for pattern, bits in overrides.items():
        if matches(name, pattern):
            return bits
    return default
