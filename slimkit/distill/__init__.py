"""Knowledge distillation: train a small student to mimic a large teacher.

- Logit distillation (Hinton, Vinyals and Dean 2015): soft targets at temperature T, the soft
  loss scaled by T^2 and mixed with the hard-label loss (:func:`kd_loss`).
- Feature distillation (FitNets, Romero et al. 2015): student layers regress teacher layers
  through learned regressors (:class:`HintSpec`, :class:`Hints`).

The teacher is an ``nn.Module``, a slimkit checkpoint (or TorchScript / ONNX file), or a local
Hugging Face classifier folder. The recipe stage is ``distill`` (:mod:`slimkit.distill.stage`).

Example (soft targets plus a FitNets hint: the student's hidden layer, 32 wide, learns to predict
the teacher's, 256 wide, through a learned regressor):
    >>> from slimkit.data import load_data
    >>> from slimkit.models import build_model
    >>> data = load_data("digits")
    >>> teacher = build_model("mlp", data.input_shape, 10)
    >>> student = build_model("mlp", data.input_shape, 10, hidden=(32,))
    >>> config = DistillConfig(temperature=4, alpha=0.9, epochs=1,
    ...                        hints=[HintSpec(student="2", teacher="2")])
    >>> distill(student, teacher, data, config, quiet=True).epochs_run
    1
"""

from slimkit.distill.api import DistillLoss, DistillResult, Trainee, distill
from slimkit.distill.config import DistillConfig
from slimkit.distill.hints import Hints, HintSpec, regressor
from slimkit.distill.losses import kd_loss, soft_loss
from slimkit.distill.teacher import (
    CachedTeacherLogits,
    HFClassifier,
    TeacherLogits,
    check_output_space,
    load_hf_teacher,
    load_teacher,
)

__all__ = [
    "CachedTeacherLogits",
    "DistillConfig",
    "DistillLoss",
    "DistillResult",
    "HFClassifier",
    "HintSpec",
    "Hints",
    "TeacherLogits",
    "Trainee",
    "check_output_space",
    "distill",
    "kd_loss",
    "load_hf_teacher",
    "load_teacher",
    "regressor",
    "soft_loss",
]
