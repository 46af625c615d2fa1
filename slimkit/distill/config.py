"""Distillation settings: the training settings of :class:`slimkit.train.TrainConfig` plus
temperature, soft-target weight and hints."""

from __future__ import annotations

from pydantic import Field

from slimkit.distill.hints import HintSpec
from slimkit.train.config import TrainConfig


class DistillConfig(TrainConfig):
    """How to distill: Hinton's temperature and soft-target weight, FitNets hints, training.

    Every :class:`~slimkit.train.TrainConfig` field (epochs, optimizer, lr, schedule, jitter, …)
    applies to the student's training. Unknown keys are errors.

    Example:
        >>> config = DistillConfig(temperature=20, alpha=0.9, epochs=5)
        >>> config.temperature, config.optimizer
        (20.0, 'adam')
    """

    temperature: float = Field(4.0, gt=0, description="softmax temperature T of the soft targets")
    alpha: float = Field(
        0.9, ge=0, le=1, description="weight of the soft-target loss; 1 - alpha weighs the labels"
    )
    hints: list[HintSpec] = Field(
        default_factory=list, description="FitNets hints: student/teacher module paths"
    )
    hint_epochs: int = Field(
        0,
        ge=0,
        description="epochs of hint-only training before distillation (FitNets' first stage)",
    )
    cache_teacher: bool = Field(
        True,
        description="compute the teacher's logits once per training example (used when there "
        "is no jitter and no hint; exact up to float rounding)",
    )
