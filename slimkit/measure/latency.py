"""Wall-clock latency of one forward pass, in eager PyTorch and in ONNX Runtime (CPU)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.measure._common import eval_mode, model_device, random_input, torch_threads
from slimkit.measure.onnx_runtime import fixed_batch, ort_session
from slimkit.measure.predict import forward_checked

# Time spent on repeats before stopping early; a measurement of a slow model stays short.
BUDGET_S = 1.0
MIN_REPEATS = 5


def median_ms(
    fn: Callable[[], object], *, warmup: int, repeats: int, budget_s: float = BUDGET_S
) -> float:
    """Median wall time of ``fn()`` in milliseconds.

    Stops after ``repeats`` calls, or earlier once ``budget_s`` seconds are spent and at least
    ``MIN_REPEATS`` (or ``repeats``, if fewer) calls are timed.

    Example:
        >>> ms = median_ms(lambda: sum(range(1000)), warmup=1, repeats=5)
        >>> 0.0 <= ms < 1000.0
        True
    """
    if repeats < 1 or warmup < 0:
        raise SlimkitError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
        if time.perf_counter() - start > budget_s:  # a slow model needs no long warm-up
            break
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (spent < budget_s or len(times) < min(MIN_REPEATS, repeats)):
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
        spent += times[-1]
    return statistics.median(times) * 1000.0


def _check(batch: int, threads: int) -> None:
    if batch < 1 or threads < 1:
        raise SlimkitError(f"batch and threads must be at least 1, got {batch} and {threads}")


def torch_latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    batch: int,
    *,
    threads: int = 2,
    warmup: int = 5,
    repeats: int = 30,
) -> float:
    """Median milliseconds of an eager forward pass on a random batch, under inference mode.

    Example:
        >>> from slimkit.models import build_model
        >>> model = build_model("mlp", (1, 8, 8), 10)
        >>> torch_latency_ms(model, (1, 8, 8), batch=1, repeats=5) > 0
        True
    """
    _check(batch, threads)
    x = random_input(batch, input_shape, model_device(model))
    with torch_threads(threads), eval_mode(model), torch.inference_mode():
        forward_checked(model, x, input_shape)  # a clear error before any timing
        return median_ms(lambda: model(x), warmup=warmup, repeats=repeats)


def ort_latency_ms(
    onnx_path: str | Path,
    input_shape: Sequence[int],
    batch: int,
    *,
    threads: int = 2,
    warmup: int = 5,
    repeats: int = 30,
) -> float:
    """Median milliseconds of an ONNX Runtime run on a random batch (``threads`` intra-op).

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()  # deleted once garbage-collected
        >>> from slimkit.measure import export_onnx
        >>> from slimkit.models import build_model
        >>> path = export_onnx(build_model("mlp", (1, 8, 8), 10), tmp.name + "/m.onnx",
        ...                    (1, 8, 8))
        >>> ort_latency_ms(path, (1, 8, 8), batch=4, repeats=5) > 0
        True
    """
    _check(batch, threads)
    session = ort_session(onnx_path, threads)
    fixed = fixed_batch(session)
    if fixed is not None and fixed != batch:
        raise SlimkitError(
            f"{onnx_path}: its batch size is fixed to {fixed}; cannot time batch "
            f"{batch} (export with a dynamic batch axis)"
        )
    x = random_input(batch, input_shape, torch.device("cpu")).numpy()
    feed = {session.get_inputs()[0].name: x}
    return median_ms(lambda: session.run(None, feed), warmup=warmup, repeats=repeats)
