"""Distillation losses: Hinton's soft-target loss and its mix with the hard-label loss.

Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural Network" (arXiv:1503.02531).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch.

    The KL divergence differs from Hinton's cross-entropy with soft targets only by the
    teacher's entropy, a constant, so the gradients are the same. Its gradients shrink as
    ``1 / T^2``; multiplying by ``T^2`` keeps the soft targets' share of the gradient the same
    when the temperature changes (Hinton et al. 2015, section 2).

    Example:
        >>> s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
        >>> float(soft_loss(s, t, temperature=2.0))
        0.0
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton's distillation objective: ``alpha * soft_loss + (1 - alpha) * cross_entropy``.

    ``alpha`` weighs the soft targets; the hard-label cross-entropy is taken at temperature 1.
    Hinton et al. found a "considerably lower weight" on the hard labels works best.

    Example:
        >>> s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[2.0, 0.0]])
        >>> round(float(kd_loss(s, t, torch.tensor([0]), temperature=4.0, alpha=0.0)), 4)
        0.1269
    """
    hard = F.cross_entropy(student_logits, labels)
    if alpha == 0:  # no teacher term: skip the softmax work
        return hard
    soft = soft_loss(student_logits, teacher_logits, temperature)
    return alpha * soft + (1.0 - alpha) * hard
