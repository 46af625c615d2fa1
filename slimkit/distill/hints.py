"""Feature distillation with hints (FitNets: Romero et al. 2015, arXiv:1412.6550).

A *hint* is the output of a teacher layer; the *guided* layer is a student layer trained to
predict it. Because the two usually differ in width, a regressor maps the student's feature to
the teacher's shape, and the regressor is trained together with the student. FitNets uses a
convolutional regressor whose kernel is ``(Hs - Ht + 1) x (Ws - Wt + 1)`` so that a larger
student map shrinks to the teacher's size (a 1x1 conv when the sizes agree); fully connected
features get a Linear regressor.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.hooks import RemovableHandle

from slimkit.errors import SlimkitError
from slimkit.measure._common import eval_mode


class HintSpec(BaseModel):
    """One hint: a student module path, a teacher module path and the loss weight.

    Example:
        >>> HintSpec(student="features.3", teacher="features.3").weight
        1.0
    """

    model_config = ConfigDict(extra="forbid")

    student: str = Field(description="module path of the guided layer in the student")
    teacher: str = Field(description="module path of the hint layer in the teacher")
    weight: float = Field(1.0, ge=0, description="weight of this hint's loss")


class FeatureTap:
    """A forward hook that keeps the latest output of one module (first tensor of a tuple).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
        >>> tap = FeatureTap(net, "0", "student")
        >>> _ = net(torch.zeros(2, 4))
        >>> tap.take().shape
        torch.Size([2, 3])
    """

    def __init__(self, model: nn.Module, path: str, role: str) -> None:
        self.output: torch.Tensor | None = None
        self.handle: RemovableHandle = _module(model, path, role).register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.output = output[0] if isinstance(output, (tuple, list)) else output

    def take(self) -> torch.Tensor:
        """The captured feature, forgotten afterwards so no stale graph is kept alive."""
        if self.output is None:
            raise SlimkitError("a hint layer produced no output in the last forward pass")
        output, self.output = self.output, None
        return output


def regressor(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """The FitNets regressor from a student feature shape to a teacher feature shape.

    Shapes include the batch axis. Feature maps of unequal rank are flattened and matched with
    a Linear layer.

    Example:
        >>> regressor(torch.Size([2, 8, 6, 6]), torch.Size([2, 16, 4, 4]))
        Conv2d(8, 16, kernel_size=(3, 3), stride=(1, 1))
        >>> regressor(torch.Size([2, 32]), torch.Size([2, 64]))
        Linear(in_features=32, out_features=64, bias=True)
    """
    if len(student_shape) == 4 and len(teacher_shape) == 4:
        (_, c_s, h_s, w_s), (_, c_t, h_t, w_t) = student_shape, teacher_shape
        if h_s < h_t or w_s < w_t:
            raise SlimkitError(
                f"hint: the student's feature map ({h_s}x{w_s}) is smaller than the teacher's "
                f"({h_t}x{w_t}); guide a student layer at least as large"
            )
        return nn.Conv2d(c_s, c_t, (h_s - h_t + 1, w_s - w_t + 1))
    return nn.Linear(student_shape[1:].numel(), teacher_shape[1:].numel())


class Hints(nn.Module):
    """Hint taps on student and teacher plus one regressor per hint (trained with the student).

    Build it from one sample batch (the regressors' sizes come from the captured shapes),
    call :meth:`loss` after a forward pass of both models, and :meth:`remove` when done.

    Example:
        >>> student = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> teacher = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> hints = Hints(student, teacher, [HintSpec(student="1", teacher="1")], torch.zeros(2, 4))
        >>> hints.regressors[0]
        Linear(in_features=8, out_features=16, bias=True)
    """

    def __init__(
        self, student: nn.Module, teacher: nn.Module, specs: list[HintSpec], sample: torch.Tensor
    ) -> None:
        super().__init__()
        self.specs = list(specs)
        self.student_taps = [FeatureTap(student, s.student, "student") for s in self.specs]
        self.teacher_taps = [FeatureTap(teacher, s.teacher, "teacher") for s in self.specs]
        with torch.no_grad(), eval_mode(student), eval_mode(teacher):
            student(sample), teacher(sample)
        self.regressors = nn.ModuleList(
            regressor(s.take().shape, t.take().shape)
            for s, t in zip(self.student_taps, self.teacher_taps, strict=True)
        )

    def loss(self) -> torch.Tensor:
        """Weighted sum over hints of the mean squared error between regressed and hint features.

        FitNets' ``1/2 ||u_h - r(v_g)||^2`` taken as a mean per element, so the weight does
        not depend on the feature size.
        """
        total = torch.zeros(())
        for spec, s_tap, t_tap, reg in zip(
            self.specs, self.student_taps, self.teacher_taps, self.regressors, strict=True
        ):
            predicted, hint = _regress(reg, s_tap.take(), t_tap.take().detach())
            total = total + spec.weight * F.mse_loss(predicted, hint)
        return total

    def remove(self) -> None:
        """Detach every hook from the student and the teacher."""
        for tap in self.student_taps + self.teacher_taps:
            tap.handle.remove()


def _regress(
    reg: nn.Module, guided: torch.Tensor, hint: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(regressed student feature, teacher hint) in matching shapes."""
    if isinstance(reg, nn.Linear):  # flattened features
        return reg(guided.flatten(1)), hint.flatten(1)
    return reg(guided), hint


def _module(model: nn.Module, path: str, role: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name][:20]
        raise SlimkitError(
            f"hint: the {role} has no module {path!r}; its modules include: {', '.join(names)}"
        ) from None
