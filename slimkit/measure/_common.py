"""Small shared helpers: state-restoring context managers, a model's device, error first lines."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in torch.onnx messages


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own previous mode.

    Restoring per submodule (not just ``model.train(was_training)``) keeps mixed states intact,
    e.g. a frozen BatchNorm inside a model that is otherwise training.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
        >>> with eval_mode(net):
        ...     print(net[1].training)
        False
        >>> net[1].training
        True
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, then restore the previous count.

    Example:
        >>> with torch_threads(1):
        ...     print(torch.get_num_threads())
        1
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence prints, warnings and ``torch.onnx`` log lines (the exporter is chatty).

    Example:
        >>> with quiet():
        ...     print("never shown")
        >>> print("shown")
        shown
    """
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters).

    Example:
        >>> model_device(nn.Linear(2, 2)), model_device(nn.ReLU())
        (device(type='cpu'), device(type='cpu'))
    """
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (torch errors run to many lines).

    Example:
        >>> first_line(RuntimeError("\\n  shape mismatch\\nsee the trace below"))
        'shape mismatch'
    """
    text = _ANSI.sub("", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def root_cause(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause: the exporter wraps the real reason in advice.

    Example:
        >>> exc = RuntimeError("export failed; try another opset")
        >>> exc.__cause__ = TypeError("unsupported dtype\\nmore detail")
        >>> root_cause(exc)
        'TypeError: unsupported dtype'
    """
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {first_line(exc)}"


def random_input(batch: int, input_shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """A seeded standard-normal batch, drawn without touching the global RNG.

    A measurement must not change what a later seeded training run draws.

    Example:
        >>> x = random_input(2, (1, 8, 8), torch.device("cpu"))
        >>> x.shape, torch.equal(x, random_input(2, (1, 8, 8), torch.device("cpu")))
        (torch.Size([2, 1, 8, 8]), True)
    """
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, *input_shape, generator=generator).to(device)
