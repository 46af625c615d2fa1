"""Fake quantization: quantize-then-dequantize in float, so PyTorch computes what int8 kernels do.

- :class:`WeightFakeQuant` is a ``torch.nn.utils.parametrize`` parametrization: the layer keeps its
  float weight (``parametrizations.weight.original``) and every forward sees the quantized one.
- :class:`ActFakeQuant` is a small module placed on an activation: it observes while
  calibrating and fake-quantizes afterwards.

Both use ``torch.fake_quantize_per_tensor_affine`` / ``..._per_channel_affine`` (core ATen ops,
not ``torch.ao``), whose gradient is the straight-through estimator (Bengio et al. 2013; as used
for QAT by Jacob et al. 2018): identity inside the range, zero where clipped. With ``learn=True``
the step size is a parameter trained with LSQ's gradient (Esser et al. 2020, "Learned Step Size
Quantization", eq. 3 with the gradient scale ``g = 1 / sqrt(N * Q_P)`` of section 2.2). The ONNX
exporter turns these ops into QuantizeLinear/DequantizeLinear pairs, which is how the QDQ model
for ONNX Runtime is made.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.quant.observers import Observer, QScheme, make_observer, pair_safe_scale


def _register_meta_kernels() -> None:
    """Shape-only kernels for the fake-quantize ops, so torch.export can trace them with a
    dynamic batch axis (PyTorch ships none; without them the ONNX export fails)."""
    lib = torch.library.Library("aten", "IMPL")

    def meta(x: torch.Tensor, *args: object) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)

    for op in (
        "fake_quantize_per_tensor_affine_cachemask",
        "fake_quantize_per_channel_affine_cachemask",
    ):
        with contextlib.suppress(RuntimeError):  # already registered (newer PyTorch, reload)
            lib.impl(op, meta, "Meta")
    _LIBRARIES.append(lib)  # the registration lives as long as the Library object


_LIBRARIES: list[torch.library.Library] = []
_register_meta_kernels()


def _grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` in the forward pass, gradient multiplied by ``factor`` (LSQ, section 2.2)."""
    return (x - x * factor).detach() + x * factor


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (torch.round(x) - x).detach() + x


def lsq_fake_quant(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, scheme: QScheme
) -> torch.Tensor:
    """Fake quantization with a learnable step size (Esser et al. 2020, eq. 1-3).

    ``scale`` (and its gradient) is per tensor, or per channel shaped to broadcast against ``x``.

    Example:
        >>> s = torch.tensor(0.1, requires_grad=True)
        >>> y = lsq_fake_quant(torch.tensor([0.26, 5.0]), s, torch.tensor(0), QScheme(bits=4))
        >>> y.sum().backward(); s.grad is not None
        True
    """
    qmin, qmax = scheme.range
    per_element = x.numel() / max(scale.numel(), 1)
    g = 1.0 / math.sqrt(per_element * qmax)
    s = _grad_scale(scale, g)
    z = zero.to(x.dtype)
    q = torch.clamp(x / s + z, qmin, qmax)
    return (_round_ste(q) - z) * s


class FakeQuant(nn.Module):
    """Shared state of weight and activation fake-quantizers: scheme, scale, zero point, observer.

    ``mode`` is ``"observe"`` (record ranges, pass values through), ``"quant"`` (fake-quantize)
    or ``"off"`` (pass through: the layer stays float, as mixed precision decides).

    Example:
        >>> q = FakeQuant(QScheme(bits=8, symmetric=False, signed=False))
        >>> _ = q(torch.tensor([0.0, 2.55]))  # observes
        >>> q.freeze(); q.mode, round(float(q.scale), 4), int(q.zero_point)
        ('quant', 0.01, 0)
    """

    def __init__(
        self,
        scheme: QScheme,
        observer: str = "minmax",
        learn: bool = False,
        options: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.scheme = scheme
        self.observer_name = observer
        self.observer: Observer | None = make_observer(observer, scheme, **(options or {}))
        shape = () if scheme.axis is None else (1,)
        self.register_buffer("zero_point", torch.zeros(shape, dtype=torch.int32))
        self.learn = learn
        if learn:
            self.scale = nn.Parameter(torch.ones(shape))
        else:
            self.register_buffer("scale", torch.ones(shape))
        self.mode = "observe"
        self._cache = (1.0, 0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._cache = (float(self.scale.reshape(-1)[0]), int(self.zero_point.reshape(-1)[0]))

    def extra_repr(self) -> str:
        axis = "per-tensor" if self.scheme.axis is None else f"per-channel(axis={self.scheme.axis})"
        return f"bits={self.scheme.bits}, {axis}, observer={self.observer_name}, mode={self.mode}"

    def freeze(self) -> None:
        """Turn the observed range into scale and zero point; switch to fake quantization."""
        if self.observer is None:
            raise SlimkitError("this quantizer has no observer left to freeze")
        scale, zero = self.observer.qparams()
        self._set(scale.reshape(-1) if self.scheme.axis is not None else scale.reshape(()), zero)
        self.mode = "quant"

    def _set(self, scale: torch.Tensor, zero: torch.Tensor) -> None:
        with torch.no_grad():
            if self.scale.shape != scale.shape:
                new = scale.clone().float()
                if self.learn:
                    self.scale = nn.Parameter(new)
                else:
                    self.scale = new
            else:
                self.scale.copy_(scale)
            self.zero_point = zero.reshape(self.scale.shape).to(torch.int32).clone()

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x`` with the frozen scale and zero point."""
        qmin, qmax = self.scheme.range
        axis = self.scheme.axis
        if self.learn and self.training:
            shape = [1] * x.dim()
            if axis is not None:
                shape[axis] = -1
            return lsq_fake_quant(
                x, self.scale.reshape(shape), self.zero_point.reshape(shape), self.scheme
            )
        scale = self.scale.detach() if self.learn else self.scale
        if torch.compiler.is_exporting():
            # ONNX's QuantizeLinear clamps to the whole int8/uint8 range; weights are clipped
            # to their grid when frozen, and activations must be 8-bit to export.
            qmin, qmax = self.scheme.container
        if axis is None:
            # Python scalars: the ONNX exporter writes them as QuantizeLinear constants. While
            # exporting, the buffers are symbolic, so the values cached by the last eager call
            # (or by loading) are used.
            if not torch.compiler.is_exporting():
                self._cache = (float(scale), int(self.zero_point))
            value, zero = self._cache
            return torch.fake_quantize_per_tensor_affine(x, value, zero, qmin, qmax)
        return torch.fake_quantize_per_channel_affine(
            x, scale, self.zero_point, axis % x.dim(), qmin, qmax
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "quant":
            return self.quantize(x)
        if self.mode == "observe" and self.observer is not None:
            self.observer.observe(x)
        return x


class WeightFakeQuant(FakeQuant):
    """A parametrization that fake-quantizes a weight (per output channel by default).

    The observer sees the weight once, when the parametrization is frozen.

    Example:
        >>> from torch.nn.utils import parametrize
        >>> layer = nn.Linear(4, 2)
        >>> wq = WeightFakeQuant(QScheme(bits=8, axis=0))
        >>> _ = parametrize.register_parametrization(layer, "weight", wq)
        >>> wq.calibrate(layer.parametrizations.weight.original)
        >>> bool((layer.weight - layer.parametrizations.weight.original).abs().max() < 0.01)
        True
    """

    def calibrate(self, weight: torch.Tensor, pair_safe: bool = False) -> None:
        """Choose the weight's range now and start fake-quantizing it; ``pair_safe`` widens
        the scales so that no integer kernel's pair sum can saturate (see
        :func:`~slimkit.quant.observers.pair_safe_scale`)."""
        if not torch.isfinite(weight).all():
            raise SlimkitError(
                "a weight holds NaN or infinite values; quantization needs a finite model "
                "(retrain it or restore a good checkpoint)"
            )
        self.observer.observe(weight)
        self.freeze()
        if pair_safe:
            axis = self.scheme.axis if self.scheme.axis is not None else 0
            self._set(pair_safe_scale(weight, self.scale, axis), self.zero_point)
        self.clip_(weight)

    def clip_(self, weight: torch.Tensor) -> None:
        """Clip the float weight, in place, to the ends of its grid.

        The quantized weight does not change (clipping happens in quantization anyway), but the
        exported QuantizeLinear, which clamps to the whole int8 range, then computes exactly it.
        """
        qmin, qmax = self.scheme.range
        shape = [1] * weight.dim()
        if self.scheme.axis is not None:
            shape[self.scheme.axis] = -1
        scale = self.scale.detach().reshape(shape)
        zero = self.zero_point.reshape(shape).to(scale.dtype)
        with torch.no_grad():
            weight.copy_(torch.clamp(weight, (qmin - zero) * scale, (qmax - zero) * scale))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.quantize(weight) if self.mode == "quant" else weight


class ActFakeQuant(FakeQuant):
    """Observes an activation during calibration, fake-quantizes it afterwards (per tensor).

    Example:
        >>> q = ActFakeQuant(QScheme(bits=8, symmetric=False, signed=False))
        >>> _ = q(torch.tensor([0.0, 2.55]))
        >>> q.freeze()
        >>> q(torch.tensor([1.004])).tolist()
        [1.0]
    """


class DynamicActFakeQuant(nn.Module):
    """Quantizes an activation with its own range at run time, as ONNX Runtime does: uint8,
    affine, one range per tensor (DynamicQuantizeLinear) or, with ``per_token``, one per row
    of the last axis (a token of a transformer; see :mod:`slimkit.quant.per_token`).

    Example:
        >>> [round(v, 4) for v in DynamicActFakeQuant()(torch.tensor([0.0, 1.0, 2.55])).tolist()]
        [0.0, 1.0, 2.55]
        >>> rows = torch.tensor([[0.0, 1.0], [0.0, 100.0]])
        >>> DynamicActFakeQuant(per_token=True)(rows).tolist()  # the small row keeps its detail
        [[0.0, 1.0], [0.0, 100.0]]
    """

    def __init__(self, scheme: QScheme | None = None, per_token: bool = False) -> None:
        super().__init__()
        self.scheme = scheme or QScheme(bits=8, symmetric=False, signed=False)
        self.per_token = per_token
        self.mode = "quant"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode != "quant" or x.numel() == 0:  # empty: a one-token input's second stream
            return x
        from slimkit.quant.observers import qparams_from_range

        qmin, qmax = self.scheme.range
        if not self.per_token:
            scale, zero = qparams_from_range(x.detach().amin(), x.detach().amax(), self.scheme)
            return torch.fake_quantize_per_tensor_affine(x, scale, zero, qmin, qmax)
        lo, hi = x.detach().amin(-1, keepdim=True), x.detach().amax(-1, keepdim=True)
        scale, zero = qparams_from_range(lo, hi, self.scheme)
        q = torch.clamp(_round_ste(x / scale) + zero, qmin, qmax)
        return (q - zero) * scale
