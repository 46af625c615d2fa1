"""Package attributes imported on first use, so that importing a package stays light."""

from __future__ import annotations

import importlib
from typing import Any


def lazy_attribute(api: dict[str, str], package: str, name: str) -> Any:
    """The attribute ``name`` of ``package`` from its ``api`` table: public name -> module that
    defines it, or ``"module:attribute"`` where the names differ. For a package's
    ``__getattr__``.

    Example:
        >>> lazy_attribute({"dumps": "json", "load_json": "json:loads"}, "demo", "load_json")("1")
        1
    """
    if name not in api:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module, _, attribute = api[name].partition(":")
    return getattr(importlib.import_module(module), attribute or name)
