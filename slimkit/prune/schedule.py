"""Pruning schedules: one-shot, iterative prune-retrain (Han et al. 2015) and gradual (AGP).

Zhu & Gupta 2017, "To prune, or not to prune": automated gradual pruning raises sparsity from
``s_i`` to ``s_f`` over ``n`` pruning steps spaced ``dt`` training steps apart, starting at ``t0``:

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3

pruning fast while the network is redundant and slowly as it nears the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from torch import nn

from slimkit.prune.magnitude import check_sparsity, magnitude_prune


def agp_sparsity(
    step: int, final: float, initial: float = 0.0, start: int = 0, n: int = 10, every: int = 1
) -> float:
    """Zhu & Gupta's cubic schedule: the sparsity to hold after training step ``step``.

    Before ``start`` it is ``initial``; after ``start + n * every`` it is ``final``.

    Example:
        >>> [round(agp_sparsity(t, 0.9, n=4, every=10), 4) for t in (0, 10, 20, 40, 99)]
        [0.0, 0.5203, 0.7875, 0.9, 0.9]
    """
    check_sparsity(final, "final sparsity")
    check_sparsity(initial, "initial sparsity")
    if step < start:
        return initial
    progress = min(1.0, (step - start) / (n * every))
    return final + (initial - final) * (1.0 - progress) ** 3


def iterative_sparsities(final: float, rounds: int) -> list[float]:
    """Targets of Han et al.'s prune-retrain rounds: each round prunes the same share of the
    weights still left, ending exactly at ``final``.

    Example:
        >>> [round(s, 3) for s in iterative_sparsities(0.99, 2)]
        [0.9, 0.99]
    """
    check_sparsity(final)
    keep = 1.0 - final
    return [1.0 - keep ** ((i + 1) / rounds) for i in range(rounds)]


def scaled(sparsity: float | Mapping[str, float], factor: float) -> float | dict[str, float]:
    """Scale one sparsity or each per-layer sparsity so that the *kept* share interpolates:
    ``factor`` 0 is dense, 1 the full target (used to step per-layer targets together).

    Example:
        >>> scaled({"a": 0.9, "b": 0.5}, 1.0)
        {'a': 0.9, 'b': 0.5}
    """
    if isinstance(sparsity, Mapping):
        return {k: 1.0 - (1.0 - v) ** factor for k, v in sparsity.items()}
    return 1.0 - (1.0 - sparsity) ** factor


class GradualPruner:
    """A ``fit`` step hook that re-masks ``layers`` on the AGP schedule every ``every`` steps.

    The overall target ``final`` may be one sparsity or per-layer sparsities; each layer follows
    the cubic curve towards its own target.

    Example:
        >>> from slimkit.models import build_model
        >>> from slimkit.layers import select_layers
        >>> layers = select_layers(build_model("lenet300", (1, 8, 8), 10))
        >>> hook = GradualPruner(layers, 0.8, n=2, every=5)
        >>> hook(10); round(hook.current, 2)
        0.8
    """

    def __init__(
        self,
        layers: Mapping[str, nn.Module],
        final: float | Mapping[str, float],
        *,
        initial: float = 0.0,
        start: int = 0,
        n: int = 10,
        every: int = 100,
        scope: str = "global",
        on_update: Callable[[int, float], None] | None = None,
    ) -> None:
        self.layers, self.final, self.initial = layers, final, initial
        self.start, self.n, self.every, self.scope = start, max(n, 1), max(every, 1), scope
        self.on_update = on_update
        self.current = initial
        if initial > 0:
            self._mask(initial)

    @property
    def end(self) -> int:
        """The training step after which sparsity stays at its target."""
        return self.start + self.n * self.every

    def _mask(self, share: float) -> None:
        if isinstance(self.final, Mapping):
            top = max(self.final.values())
            target = scaled(self.final, _factor(share, top))
        else:
            target = share
        magnitude_prune(self.layers, target, scope=self.scope)
        self.current = share

    def __call__(self, step: int) -> None:
        if step < self.start or step > self.end or (step - self.start) % self.every:
            return
        top = max(self.final.values()) if isinstance(self.final, Mapping) else self.final
        share = agp_sparsity(step, top, self.initial, self.start, self.n, self.every)
        if share > self.current or step == self.end:
            self._mask(share)
            if self.on_update is not None:
                self.on_update(step, share)


def _factor(share: float, top: float) -> float:
    """The exponent that maps the largest per-layer target ``top`` to ``share`` (kept shares
    scale geometrically, so every layer reaches its own target at the same step)."""

    if share <= 0 or top <= 0:
        return 0.0
    return math.log(1.0 - share) / math.log(1.0 - top)
