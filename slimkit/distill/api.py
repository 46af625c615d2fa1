"""``distill(student, teacher, data, config)``: train a student to mimic a teacher.

Logit distillation follows Hinton, Vinyals and Dean 2015 ("Distilling the Knowledge in a Neural
Network"); feature distillation follows FitNets (Romero et al. 2015, "FitNets: Hints for Thin
Deep Nets"). Both run inside slimkit's one training loop, :func:`slimkit.train.fit`, by swapping
its ``loss_fn``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from slimkit.data import Dataset
from slimkit.distill.config import DistillConfig
from slimkit.distill.hints import Hints
from slimkit.distill.losses import kd_loss
from slimkit.distill.teacher import (
    CachedTeacherLogits,
    TeacherLogits,
    TeacherSource,
    check_output_space,
    load_teacher,
)
from slimkit.train import TrainResult, fit, seed_everything


@dataclass
class DistillResult(TrainResult):
    """:class:`~slimkit.train.TrainResult` of the distillation, plus the per-epoch history of
    FitNets' hint-only first stage (empty without ``hint_epochs``).

    Example:
        >>> result = DistillResult(epochs_run=2)
        >>> result.hint_history, isinstance(result, TrainResult)
        ([], True)
    """

    hint_history: list[dict[str, float]] = field(default_factory=list)


class Trainee(nn.Module):
    """The student plus the hint regressors, so that ``fit``'s optimiser trains both.

    Its forward pass is the student's, so validation inside ``fit`` scores the student. The
    teacher is deliberately not a submodule: it must get no optimiser step and no mode change.
    """

    def __init__(self, student: nn.Module, hints: Hints | None = None) -> None:
        super().__init__()
        self.student, self.hints = student, hints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


class DistillLoss:
    """A ``loss_fn(model, x, y)`` for :func:`slimkit.train.fit`: Hinton's loss plus hint losses.

    Example:
        >>> from slimkit.distill.teacher import TeacherLogits
        >>> loss_fn = DistillLoss(TeacherLogits(nn.Linear(4, 3)), DistillConfig(temperature=2))
        >>> loss_fn(Trainee(nn.Linear(4, 3)), torch.zeros(5, 4), torch.zeros(5).long()).ndim
        0
    """

    def __init__(
        self,
        teacher: Callable[[torch.Tensor], torch.Tensor],
        config: DistillConfig,
        hints: Hints | None = None,
        *,
        hints_only: bool = False,
    ) -> None:
        self.teacher, self.config, self.hints, self.hints_only = teacher, config, hints, hints_only

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        teacher_logits = self.teacher(x)  # first: it also fills the teacher's hint taps
        student_logits = model(x)
        if self.hints_only and self.hints is not None:
            return self.hints.loss()
        loss = kd_loss(
            student_logits, teacher_logits, y, self.config.temperature, self.config.alpha
        )
        return loss + self.hints.loss() if self.hints is not None else loss


def distill(
    student: nn.Module,
    teacher: TeacherSource,
    data: Dataset,
    config: DistillConfig | None = None,
    *,
    quiet: bool | None = None,
) -> DistillResult:
    """Train ``student`` in place to match ``teacher`` on ``data.train``; return the fit result.

    ``teacher`` is an ``nn.Module``, a model file slimkit loads (checkpoint, TorchScript,
    ONNX) or a Hugging Face classifier folder (see :func:`load_teacher`). It must give outputs
    of the student's shape (checked on one batch). With ``config.hints`` the student's guided
    layers also learn to predict the teacher's hint layers through regressors (FitNets); with
    ``config.hint_epochs`` that happens alone first, as FitNets' first stage.

    Example:
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> data = load_data("digits")
        >>> teacher = build_model("mlp", data.input_shape, 10)
        >>> student = build_model("mlp", data.input_shape, 10, hidden=(32,))
        >>> distill(student, teacher, data, DistillConfig(epochs=1), quiet=True).epochs_run
        1
    """
    config = config or DistillConfig()
    teacher = load_teacher(teacher)
    sample = data.train.x[:2]
    check_output_space(student, teacher, sample)
    seed_everything(config.seed)  # the regressors' initial weights
    hints = Hints(student, teacher, config.hints, sample) if config.hints else None
    trainee = Trainee(student, hints)
    teach = _teacher_logits(teacher, config)
    try:
        first = _hint_stage(trainee, data, teach, config, quiet)
        result = fit(trainee, data, config, loss_fn=DistillLoss(teach, config, hints), quiet=quiet)
    finally:
        if hints is not None:
            hints.remove()
    return DistillResult(**vars(result), hint_history=first.history)


def _hint_stage(
    trainee: Trainee,
    data: Dataset,
    teach: TeacherLogits,
    config: DistillConfig,
    quiet: bool | None,
) -> TrainResult:
    """FitNets' first stage: train the guided layers (and regressors) on the hint loss alone."""
    if trainee.hints is None or not config.hint_epochs:
        return TrainResult()
    stage1 = config.model_copy(update={"epochs": config.hint_epochs})
    loss_fn = DistillLoss(teach, config, trainee.hints, hints_only=True)
    return fit(trainee, data, stage1, loss_fn=loss_fn, quiet=quiet)


def _teacher_logits(teacher: nn.Module, config: DistillConfig) -> TeacherLogits:
    # Caching needs inputs that repeat exactly, and hints need the teacher's forward pass.
    if config.cache_teacher and not config.jitter and not config.hints:
        return CachedTeacherLogits(teacher)
    return TeacherLogits(teacher)
