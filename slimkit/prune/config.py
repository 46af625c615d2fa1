"""Pruning settings, validated when they are made (unknown keys and bad values are errors)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slimkit.layers import DEFAULT_TYPES, check_pattern
from slimkit.train.config import TrainConfig

LayerType = Literal["Linear", "Conv1d", "Conv2d", "Conv3d"]

_MAGNITUDE_ONLY = {"threshold", "scope", "schedule", "iterations", "initial_sparsity",
                   "frequency", "start_step", "end_fraction", "allocation", "sweep"}  # fmt: skip
_STRUCTURED_ONLY = {"macs_reduction", "criterion", "round_to", "leaf_modules", "taylor_batches"}


def _share(value: float, what: str) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{what} must be in [0, 1) (the share removed), got {value}; "
            "1.0 would remove everything, e.g. 0.9 keeps 10%"
        )
    return value


def default_retrain() -> TrainConfig:
    """Retraining defaults: a tenth of TrainConfig's default learning rate (Han et al. 2015).

    Example:
        >>> config = default_retrain()
        >>> config.epochs, config.lr
        (3, 0.0001)
    """
    return TrainConfig(epochs=3, lr=1e-4)


class PruneConfig(BaseModel):
    """How to prune: method, target, which layers, schedule and retraining.

    ``method`` ``magnitude`` zeroes single weights (unstructured); ``structured`` removes whole
    neurons and channels so layers shrink. Settings of the other method are refused.

    Example:
        >>> PruneConfig(sparsity=0.9, schedule="gradual").scope
        'global'
        >>> PruneConfig(method="structured", macs_reduction=0.5).criterion
        'l1'
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["magnitude", "structured"] = "magnitude"
    sparsity: float | None = Field(
        None,
        description="share of weights (magnitude) or of each group's channels (structured) "
        "removed, in [0, 1); 0.5 when no other target is given",
    )
    sparsities: dict[str, float] = Field(
        default_factory=dict, description="per-layer sparsity by name pattern (magnitude)"
    )
    threshold: float | None = Field(None, ge=0, description="prune weights with |w| below this")
    macs_reduction: float | None = Field(None, description="structured: remove this MAC share")
    layers: list[str] = Field(default_factory=lambda: ["*"], description="name patterns")
    exclude: list[str] = Field(default_factory=list, description="name patterns left whole")
    types: list[LayerType] = Field(default_factory=lambda: list(DEFAULT_TYPES))
    scope: Literal["global", "layer"] = "global"
    allocation: Literal["uniform", "sensitivity"] = Field(
        "uniform", description="sensitivity: per-layer shares from a sweep on the val split"
    )
    sweep: list[float] = Field(
        default_factory=lambda: [0.0, 0.5, 0.7, 0.8, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99]
    )
    schedule: Literal["oneshot", "iterative", "gradual"] = "oneshot"
    iterations: int = Field(3, ge=1, description="iterative: prune-retrain rounds")
    initial_sparsity: float = Field(0.0, description="gradual: s_i of the cubic schedule")
    frequency: int = Field(100, ge=1, description="gradual: training steps between updates")
    start_step: int = Field(0, ge=0, description="gradual: step t0 of the first update")
    end_fraction: float = Field(
        0.75, gt=0, le=1, description="gradual: share of retraining steps spent pruning"
    )
    retrain: TrainConfig | None = Field(
        default_factory=default_retrain, description="retraining after (or during) pruning"
    )
    criterion: Literal["l1", "l2", "bn", "taylor"] = "l1"
    taylor_batches: int = Field(8, ge=1)
    round_to: int = Field(1, ge=1, description="structured: keep channel counts multiples of")
    leaf_modules: list[str] = Field(default_factory=list, description="kept opaque by tracer")
    finalize: bool = Field(True, description="bake masks in (plain layers with zeros)")

    @field_validator("sparsity", "initial_sparsity", "macs_reduction")
    @classmethod
    def _in_unit(cls, value: float | None, info) -> float | None:
        return None if value is None else _share(value, info.field_name)

    @field_validator("sparsities")
    @classmethod
    def _per_layer(cls, value: dict[str, float]) -> dict[str, float]:
        for pattern, share in value.items():
            check_pattern(pattern)
            _share(share, f"sparsity of {pattern!r}")
        return value

    @field_validator("layers", "exclude", "leaf_modules")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        return [check_pattern(p) for p in value]

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, value: list[float]) -> list[float]:
        return sorted({_share(v, "sweep sparsity") for v in value} | {0.0})

    @model_validator(mode="after")
    def _consistent(self) -> PruneConfig:
        given = self.model_fields_set
        wrong = given & (_STRUCTURED_ONLY if self.method == "magnitude" else _MAGNITUDE_ONLY)
        if self.method == "structured" and self.sparsities:
            wrong.add("sparsities")
        if wrong:
            raise ValueError(f"{sorted(wrong)} do not apply to method {self.method!r}")
        targets = [k for k in ("sparsity", "threshold", "macs_reduction") if k in given]
        if len(targets) > 1:
            raise ValueError(f"give one target, not {' and '.join(targets)}")
        if self.schedule == "gradual" and self.threshold is not None:
            raise ValueError("the gradual schedule needs a sparsity target, not a threshold")
        if self.allocation == "sensitivity" and (self.threshold is not None or self.sparsities):
            raise ValueError("allocation 'sensitivity' derives per-layer shares from 'sparsity'")
        if self.schedule == "gradual" and self.retrain is None:
            raise ValueError("the gradual schedule prunes during retraining: give 'retrain'")
        if self.schedule == "gradual" and self.initial_sparsity >= self.target:
            raise ValueError("initial_sparsity must be below the target sparsity")
        return self

    @property
    def target(self) -> float:
        """The sparsity aimed at (0.5 when neither a sparsity nor another target is given)."""
        return self.sparsity if self.sparsity is not None else 0.5
