"""Teachers: loading one (module, slimkit file or Hugging Face folder) and querying it.

The teacher is only ever run in eval mode without gradients: distillation trains the student.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.measure._common import eval_mode
from slimkit.measure.predict import forward_checked
from slimkit.models import load_model

TeacherSource = nn.Module | str | Path


def load_teacher(source: TeacherSource) -> nn.Module:
    """A teacher model from an ``nn.Module``, a file slimkit loads, or a Hugging Face folder.

    Files are whatever :func:`slimkit.load_model` reads (a slimkit ``.safetensors`` checkpoint,
    TorchScript, ONNX); a relative path is taken from the current directory. A folder holding a
    ``config.json`` is loaded with ``transformers.AutoModelForSequenceClassification`` (only
    when ``transformers`` is installed: ``pip install 'slimkit[nlp]'``).

    Example:
        >>> load_teacher(nn.Linear(4, 2)).out_features
        2
    """
    if isinstance(source, nn.Module):
        return source
    path = Path(source)
    if path.is_dir() and (path / "config.json").is_file():
        return load_hf_teacher(path)
    if not path.exists():
        raise SlimkitError(f"teacher {path} does not exist (relative paths start at {Path.cwd()})")
    return load_model(path)


class HFClassifier(nn.Module):
    """A Hugging Face sequence classifier behind the plain ``model(x) -> logits`` interface.

    ``x`` is a batch of token ids (a LongTensor) or, when a tokenizer was saved beside the model,
    a list of strings.
    """

    def __init__(self, model: nn.Module, tokenizer: Any | None = None, max_length: int = 128):
        super().__init__()
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    def forward(self, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return self.model(input_ids=x).logits
        if self.tokenizer is None:
            raise SlimkitError("this Hugging Face teacher has no tokenizer; pass token ids")
        batch = self.tokenizer(
            list(x), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return self.model(**batch).logits


def load_hf_teacher(path: Path) -> HFClassifier:
    """Load a local Hugging Face ``AutoModelForSequenceClassification`` folder (no download).

    Example:
        >>> teacher = load_hf_teacher(Path("minilm-sst2"))  # doctest: +SKIP
    """
    try:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        raise SlimkitError(
            f"{path} is a Hugging Face model folder; install transformers to use it as a "
            "teacher: pip install 'slimkit[nlp]'"
        ) from None
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise SlimkitError(f"{path}: not a loadable Hugging Face classifier ({exc})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError):  # a model saved without its tokenizer
        tokenizer = None
    return HFClassifier(model.eval(), tokenizer)


def check_output_space(student: nn.Module, teacher: nn.Module, x: Any) -> None:
    """Raise a :class:`SlimkitError` unless student and teacher give outputs of one shape on ``x``.

    Example:
        >>> check_output_space(nn.Linear(4, 3), nn.Linear(4, 2), torch.zeros(2, 4))
        Traceback (most recent call last):
        ...
        slimkit.errors.SlimkitError: teacher and student have different output spaces: ...
    """
    shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else ()
    with torch.no_grad(), eval_mode(student), eval_mode(teacher):
        s_shape = tuple(forward_checked(student, x, shape).shape[1:])
        t_shape = tuple(forward_checked(teacher, x, shape).shape[1:])
    if s_shape != t_shape:
        raise SlimkitError(
            f"teacher and student have different output spaces: the teacher gives {t_shape} "
            f"per example, the student {s_shape}; distillation needs the same outputs "
            "(e.g. the same number of classes)"
        )


class TeacherLogits:
    """Call the teacher in eval mode without gradients: ``TeacherLogits(teacher)(x)``.

    Example:
        >>> TeacherLogits(nn.Linear(4, 2))(torch.zeros(3, 4)).requires_grad
        False
    """

    def __init__(self, teacher: nn.Module) -> None:
        self.teacher = teacher

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), eval_mode(self.teacher):
            return self.teacher(x)


class CachedTeacherLogits(TeacherLogits):
    """Teacher logits memoised per distinct input row (keyed by a 128-bit hash of its bytes).

    On a fixed transfer set (no jitter) each training example meets the same teacher every
    epoch, so the teacher runs once per example instead of once per example and epoch. The
    answer is the teacher's, up to float rounding of the batch it was first computed in.

    Example:
        >>> teach = CachedTeacherLogits(nn.Linear(4, 2))
        >>> torch.equal(teach(torch.ones(3, 4)), teach(torch.ones(3, 4))), len(teach.store)
        (True, 1)
    """

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__(teacher)
        self.store: dict[bytes, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.detach().cpu().reshape(len(x), -1).contiguous().numpy()
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]
        missing = [i for i, key in enumerate(keys) if key not in self.store]
        if missing:
            for i, logits in zip(missing, super().__call__(x[missing]), strict=True):
                self.store[keys[i]] = logits
        return torch.stack([self.store[key] for key in keys])
