"""Progress bars for long work: rich bars on a terminal, silence elsewhere or with --quiet."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")
_QUIET = {"value": False}


def set_quiet(quiet: bool) -> None:
    """Silence every progress bar of this process (the CLI's ``--quiet``).

    Example:
        >>> set_quiet(True)
        >>> enabled()
        False
        >>> set_quiet(False)
    """
    _QUIET["value"] = quiet


def enabled(quiet: bool | None = None) -> bool:
    """Bars show only when stdout is a terminal and nobody asked for quiet.

    Example:
        >>> enabled(quiet=True)
        False
    """
    if quiet if quiet is not None else _QUIET["value"]:
        return False
    return sys.stdout.isatty() and os.environ.get("CI") is None


def track(
    items: Iterable[T], description: str, total: int | None = None, quiet: bool | None = None
) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar when :func:`enabled`.

    Example:
        >>> sum(track(range(3), "counting", quiet=True))
        3
    """
    with StatusBar(description, total or 0, quiet) as bar:
        for item in items:
            yield item
            bar.advance()


class StatusBar:
    """A bar whose trailing text the caller updates (e.g. the loss of the current epoch).

    Example:
        >>> with StatusBar("training", total=2, quiet=True) as bar:
        ...     for epoch in range(2):
        ...         bar.advance(f"epoch {epoch + 1}")
    """

    def __init__(self, description: str, total: int, quiet: bool | None = None) -> None:
        self._bar = None
        if enabled(quiet):
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self._task = self._bar.add_task(description, total=total, status="")

    def __enter__(self) -> StatusBar:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, status: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, status=status)
