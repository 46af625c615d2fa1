"""A tiny name -> object registry, shared by models, data loaders, stages and benchmarks.

Each concept keeps its own :class:`Registry`; a new method registers itself with a decorator in
its own module, so adding one never means editing a switch statement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from slimkit.errors import SlimkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind.

    Example:
        >>> models = Registry("model")
        >>> @models.register("tiny")
        ... def tiny(): ...
        >>> models.get("tiny").__name__
        'tiny'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names list the known ones."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise SlimkitError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
