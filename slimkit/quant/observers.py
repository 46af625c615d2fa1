"""Range observers: watch a tensor over calibration batches and choose its quantization range.

Every observer ends in the same place, :meth:`Observer.qparams`, which turns the chosen range
``[lo, hi]`` into a scale and zero point for a :class:`QScheme` (bits, signed or not, symmetric or
affine, per tensor or per channel). The five ways of choosing the range:

- ``minmax``: the smallest and largest value seen.
- ``moving-average``: an exponential moving average of each batch's min and max (as in
  Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference", section 3.1), robust to one odd batch.
- ``percentile``: the p-th percentile of the values (McKinley 1999's clipping, as in
  Wu et al. 2020, "Integer Quantization for Deep Learning Inference", section 4.2).
- ``mse``: the clipping range that minimises the expected squared quantization error
  (Banner et al. 2019; Wu et al. 2020, section 4.2).
- ``entropy``: the threshold minimising the KL divergence between the float and the quantized
  histograms (Migacz 2017, "8-bit Inference with TensorRT").

Example:
    >>> import torch
    >>> obs = make_observer("minmax", QScheme(bits=8, symmetric=False, signed=False))
    >>> obs.observe(torch.tensor([-1.0, 0.0, 3.0]))
    >>> scale, zero_point = obs.qparams()
    >>> round(float(scale), 5), int(zero_point)
    (0.01569, 64)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from slimkit.errors import SlimkitError

OBSERVERS = ("minmax", "moving-average", "percentile", "mse", "entropy")
HIST_BINS = 2048  # histogram resolution of the histogram observers (TensorRT uses 2048)


@dataclass(frozen=True)
class QScheme:
    """How a tensor is quantized: bit width, signedness, symmetric or affine, channel axis.

    Signed symmetric schemes scale the range onto ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` so that it is
    symmetric around an exact zero (Wu et al. 2020, section 3.1); ``-2^(b-1)`` stays a valid
    code, as ONNX's int8 QuantizeLinear allows it.

    Example:
        >>> QScheme(bits=8, symmetric=True, signed=True).range
        (-128, 127)
        >>> QScheme(bits=4, symmetric=False, signed=False).range
        (0, 15)
    """

    bits: int = 8
    symmetric: bool = True
    signed: bool = True
    axis: int | None = None  # None: per tensor; else the channel axis

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise SlimkitError(f"bit width must be between 2 and 8, got {self.bits}")

    @property
    def range(self) -> tuple[int, int]:
        """(qmin, qmax) of the integer grid."""
        if self.signed:
            half = 2 ** (self.bits - 1)
            return -half, half - 1
        return 0, 2**self.bits - 1

    @property
    def container(self) -> tuple[int, int]:
        """The 8-bit ONNX type range that holds this grid: int8 or uint8."""
        return (-128, 127) if self.signed else (0, 255)


def qparams_from_range(
    lo: torch.Tensor, hi: torch.Tensor, scheme: QScheme
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map ``[lo, hi]`` (widened to include 0) onto the integer grid.

    Zero is always representable exactly, which padding and ReLU outputs need.

    Example:
        >>> s, z = qparams_from_range(torch.tensor(-1.0), torch.tensor(1.0), QScheme())
        >>> round(float(s), 6), int(z)
        (0.007874, 0)
    """
    qmin, qmax = scheme.range
    lo = torch.minimum(lo.float(), torch.zeros_like(lo, dtype=torch.float32))
    hi = torch.maximum(hi.float(), torch.zeros_like(hi, dtype=torch.float32))
    tiny = torch.finfo(torch.float32).tiny * 1e6
    if scheme.symmetric:
        bound = torch.maximum(-lo, hi)
        if scheme.signed:
            scale = bound / qmax  # qmax = 2^(b-1) - 1: the narrow, symmetric grid
            zero = torch.zeros_like(scale)
        else:  # unsigned symmetric: the grid is centred on its middle value
            scale = 2 * bound / (qmax - qmin)
            zero = torch.full_like(scale, float((qmin + qmax + 1) // 2))
    else:
        scale = (hi - lo) / (qmax - qmin)
        zero = qmin - torch.round(lo / torch.clamp(scale, min=tiny))
    scale = torch.clamp(scale, min=tiny)
    return scale, torch.clamp(zero, qmin, qmax).to(torch.int32)


PAIR_LIMIT = 127  # |q_2j| + |q_2j+1| <= 127 + 1 after rounding; 255 * 128 < 2**15


def pair_safe_scale(weight: torch.Tensor, scale: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Widen symmetric int8 weight scales so that no two neighbouring weights along the input
    axis of a 2-D weight sum to more than 128 in magnitude after rounding.

    On x86 CPUs without VNNI, ONNX Runtime's u8 x s8 GEMM (vpmaddubsw) adds the products of
    input positions 2j and 2j+1 in a saturating 16-bit register, so ``255 * (|q_2j| + |q_2j+1|)``
    must stay below 2^15. ONNX Runtime's ``reduce_range`` keeps that by using 7-bit weights;
    this keeps 8 bits wherever a channel's largest weight sits beside a small one (nearly
    always), and is never coarser: the scale is at most ``max|w| / 63.5``, not ``/ 63``.
    ``axis`` is the output-channel axis (0 for ``nn.Linear``'s [out, in]; 1 for ONNX [K, N]).

    Example:
        >>> w = torch.tensor([[1.0, 0.1, -0.2, 0.3]])
        >>> round(float(pair_safe_scale(w, torch.tensor([1.0 / 127]))) * 127, 4)  # |1.0| + |0.1|
        1.1
    """
    rows = weight.detach().abs().float().movedim(axis, 0).reshape(weight.shape[axis], -1)
    if rows.shape[1] % 2:
        rows = torch.nn.functional.pad(rows, (0, 1))
    limit = rows.reshape(len(rows), -1, 2).sum(-1).amax(1) / PAIR_LIMIT
    limit = limit.reshape(scale.shape) if scale.numel() > 1 else limit.max().reshape(scale.shape)
    return torch.maximum(scale, limit)


def _reduce_dims(x: torch.Tensor, axis: int | None) -> tuple[int, ...]:
    return tuple(d for d in range(x.dim()) if d != (axis % x.dim() if axis is not None else -99))


class Observer:
    """Base class: tracks a tensor's min and max; subclasses refine :meth:`range`.

    Example:
        >>> obs = Observer(QScheme())
        >>> obs.observe(torch.tensor([-1.0, 3.0]))
        >>> [float(v) for v in obs.range()]
        [-1.0, 3.0]
    """

    def __init__(self, scheme: QScheme) -> None:
        self.scheme = scheme
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None
        self.batches = 0

    def observe(self, x: torch.Tensor) -> None:
        """Record one batch of values."""
        x = x.detach().float()
        if x.numel() == 0:
            return
        if not torch.isfinite(x).all():
            raise SlimkitError(
                "a tensor holds NaN or infinite values during calibration; check the "
                "model's weights and the calibration data"
            )
        dims = _reduce_dims(x, self.scheme.axis)
        lo = x.amin(dim=dims) if dims else x
        hi = x.amax(dim=dims) if dims else x
        self._update(lo, hi, x)
        self.batches += 1

    def _update(self, lo: torch.Tensor, hi: torch.Tensor, x: torch.Tensor) -> None:
        self.min = lo if self.min is None else torch.minimum(self.min, lo)
        self.max = hi if self.max is None else torch.maximum(self.max, hi)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen ``(lo, hi)``; the plain observer returns the min and max seen."""
        self._check()
        return self.min, self.max

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point for the chosen range."""
        lo, hi = self.range()
        return qparams_from_range(lo, hi, self.scheme)

    def _check(self) -> None:
        if self.min is None or self.max is None:
            raise SlimkitError(
                "an observer saw no data: calibrate with at least one non-empty batch"
            )


class MinMaxObserver(Observer):
    """The smallest and largest value seen (exact, but one outlier stretches the range).

    Example:
        >>> obs = MinMaxObserver(QScheme(symmetric=False, signed=False))
        >>> obs.observe(torch.tensor([0.0, 1.0])); obs.observe(torch.tensor([2.55]))
        >>> scale, zero = obs.qparams()
        >>> round(float(scale), 4), int(zero)
        (0.01, 0)
    """


class MovingAverageObserver(Observer):
    """Exponential moving average of each batch's min and max (Jacob et al. 2018).

    Example:
        >>> obs = MovingAverageObserver(QScheme(), momentum=0.5)
        >>> obs.observe(torch.tensor([0.0, 2.0])); obs.observe(torch.tensor([0.0, 4.0]))
        >>> float(obs.range()[1])  # halfway between 2 and 4
        3.0
    """

    def __init__(self, scheme: QScheme, momentum: float = 0.01) -> None:
        super().__init__(scheme)
        self.momentum = momentum

    def _update(self, lo: torch.Tensor, hi: torch.Tensor, x: torch.Tensor) -> None:
        if self.min is None:
            self.min, self.max = lo, hi
            return
        c = self.momentum
        self.min = self.min + c * (lo - self.min)
        self.max = self.max + c * (hi - self.max)


class HistogramObserver(Observer):
    """Keeps a histogram of the values (per tensor) over a range that grows as data arrives.

    When a batch extends the range, the old counts move to the new bins holding their bin centres
    (as PyTorch's and ONNX Runtime's histogram calibrators do).

    Example:
        >>> obs = HistogramObserver(QScheme(), bins=8)
        >>> obs.observe(torch.tensor([0.0, 1.0])); obs.observe(torch.tensor([3.0]))
        >>> int(obs.hist.sum()), [float(v) for v in obs.range()]
        (3, [0.0, 3.0])
    """

    def __init__(self, scheme: QScheme, bins: int = HIST_BINS) -> None:
        super().__init__(scheme)
        self.bins = bins
        self.hist: torch.Tensor | None = None
        self.edges: tuple[float, float] | None = None

    def _update(self, lo: torch.Tensor, hi: torch.Tensor, x: torch.Tensor) -> None:
        super()._update(lo, hi, x)
        if self.scheme.axis is not None:
            return  # per-channel refinement works on the tensor itself (weights), see range()
        new_lo, new_hi = float(self.min.min()), float(self.max.max())
        if new_hi <= new_lo:
            new_hi = new_lo + 1e-8
        if self.hist is not None and self.edges != (new_lo, new_hi):
            self.hist = self._rebin(self.hist, self.edges, (new_lo, new_hi))
        counts = torch.histc(x.flatten(), self.bins, new_lo, new_hi).double()
        self.hist = counts if self.hist is None else self.hist + counts
        self.edges = (new_lo, new_hi)
        self._last = x  # per-channel observers of weights refine on the last tensor

    def _rebin(self, hist: torch.Tensor, old: tuple[float, float], new: tuple[float, float]):
        width = (old[1] - old[0]) / self.bins
        centres = old[0] + (torch.arange(self.bins, dtype=torch.float64) + 0.5) * width
        index = ((centres - new[0]) / (new[1] - new[0]) * self.bins).long()
        out = torch.zeros(self.bins, dtype=torch.float64)
        out.index_add_(0, index.clamp(0, self.bins - 1), hist)
        return out

    def centres(self) -> torch.Tensor:
        """Bin centres of the histogram."""
        lo, hi = self.edges
        width = (hi - lo) / self.bins
        return lo + (torch.arange(self.bins, dtype=torch.float64) + 0.5) * width


class PercentileObserver(HistogramObserver):
    """Clip to the ``percentile``-th percentile of the values at both ends (Wu et al. 2020).

    Example:
        >>> obs = PercentileObserver(QScheme(), percentile=99.0)
        >>> obs.observe(torch.cat([torch.linspace(-1, 1, 999), torch.tensor([100.0])]))
        >>> float(obs.range()[1]) < 2  # the one outlier is clipped
        True
    """

    def __init__(self, scheme: QScheme, percentile: float = 99.99) -> None:
        super().__init__(scheme)
        if not 50.0 < percentile <= 100.0:
            raise SlimkitError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._check()
        if self.scheme.axis is not None:
            return self._per_channel()
        cdf = torch.cumsum(self.hist, 0) / self.hist.sum()
        tail = 1.0 - self.percentile / 100.0
        centres = self.centres()
        lo_index = int(torch.searchsorted(cdf, torch.tensor(tail, dtype=torch.float64)))
        hi_index = int(torch.searchsorted(cdf, torch.tensor(1.0 - tail, dtype=torch.float64)))
        lo = torch.tensor(float(centres[min(lo_index, self.bins - 1)]))
        hi = torch.tensor(float(centres[min(hi_index, self.bins - 1)]))
        return torch.minimum(lo, self.min.min()), torch.maximum(hi, lo)

    def _per_channel(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._channels_last()
        q = self.percentile / 100.0
        return torch.quantile(x, 1 - q, dim=1), torch.quantile(x, q, dim=1)

    def _channels_last(self) -> torch.Tensor:
        x = getattr(self, "_last", None)
        if x is None:
            raise SlimkitError("per-channel percentile needs the tensor itself (weights)")
        return x.movedim(self.scheme.axis, 0).reshape(x.shape[self.scheme.axis], -1)

    def _update(self, lo: torch.Tensor, hi: torch.Tensor, x: torch.Tensor) -> None:
        super()._update(lo, hi, x)
        self._last = x


class MSEObserver(PercentileObserver):
    """The clipping range with the least expected squared quantization error.

    Candidate ranges shrink the observed ``[min, max]`` by factors from 1 down to 0.3; each one's
    error is the sum over histogram bins (or over the weights themselves, per channel) of the
    squared difference between a value and its quantize-dequantize image, clipping included.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> obs = MSEObserver(QScheme(bits=4))
        >>> obs.observe(torch.cat([torch.randn(10_000), torch.tensor([20.0])]))
        >>> float(obs.range()[1]) < 20  # clipping the rare outlier costs less than coarse steps
        True
    """

    GRID = torch.linspace(1.0, 0.3, 71)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._check()
        if self.scheme.axis is not None:
            x = self._channels_last()
            return self._search(x, torch.ones_like(x), x.amin(1), x.amax(1))
        values = self.centres().float()[None]
        weights = self.hist.float()[None]
        lo, hi = self._search(values, weights, self.min.min()[None], self.max.max()[None])
        return lo[0], hi[0]

    def _search(self, x: torch.Tensor, w: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
        best_err = torch.full((x.shape[0],), float("inf"))
        best_lo, best_hi = lo.clone(), hi.clone()
        for factor in self.GRID:
            cand_lo, cand_hi = lo * factor, hi * factor
            scale, zero = qparams_from_range(cand_lo, cand_hi, self.scheme)
            deq = fake_quant_values(x, scale[:, None], zero[:, None], self.scheme)
            err = ((deq - x) ** 2 * w).sum(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, cand_lo, best_lo)
            best_hi = torch.where(better, cand_hi, best_hi)
        return best_lo, best_hi


class EntropyObserver(HistogramObserver):
    """The threshold minimising KL(P || Q) between float and quantized histograms (Migacz 2017).

    Works on the histogram of ``|x|``: for each candidate threshold ``t`` the reference
    distribution P is the histogram up to ``t`` with the clipped tail added to its last bin, and Q
    is P merged into as many bins as the grid has levels and spread back. The range is then
    ``[-t, t]``, intersected with the observed ``[min, max]``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> obs = EntropyObserver(QScheme())
        >>> obs.observe(torch.cat([torch.randn(10_000), torch.tensor([50.0])]))
        >>> float(obs.range()[1]) < 50
        True
    """

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._check()
        if self.scheme.axis is not None:
            raise SlimkitError(
                "the entropy observer works per tensor (activations); use minmax or mse "
                "for per-channel weights"
            )
        magnitude = self._abs_histogram()
        qmin, qmax = self.scheme.range
        one_sided = float(self.min.min()) >= 0 or float(self.max.max()) <= 0
        levels = (qmax - qmin + 1) if one_sided else (qmax - qmin + 1) // 2
        t = _kl_threshold(magnitude, levels) * self._abs_width
        lo = torch.maximum(self.min.min(), torch.tensor(-t))
        hi = torch.minimum(self.max.max(), torch.tensor(t))
        return lo, hi

    def _abs_histogram(self) -> torch.Tensor:
        centres = self.centres()
        bound = float(centres.abs().max())
        self._abs_width = bound / self.bins
        index = (centres.abs() / bound * self.bins).long().clamp(0, self.bins - 1)
        out = torch.zeros(self.bins, dtype=torch.float64)
        out.index_add_(0, index, self.hist)
        return out


def _kl_threshold(hist: torch.Tensor, levels: int) -> float:
    """Number of bins (as a float threshold in bin widths) minimising KL(P || Q), TensorRT-style."""
    bins = len(hist)
    if levels >= bins:
        return float(bins)
    best, best_i = math.inf, bins
    for i in range(levels, bins + 1, max(1, (bins - levels) // 256)):
        p = hist[:i].clone()
        p[i - 1] += hist[i:].sum()
        q = _merge_and_expand(hist[:i], levels)
        kl = _kl(p, q)
        if kl < best:
            best, best_i = kl, i
    return float(best_i)


def _merge_and_expand(p: torch.Tensor, levels: int) -> torch.Tensor:
    """Merge ``p`` into ``levels`` groups, then spread each group's mass over its non-empty bins."""
    n = len(p)
    group = (torch.arange(n) * levels // n).clamp(max=levels - 1)
    mass = torch.zeros(levels, dtype=p.dtype).index_add_(0, group, p)
    nonzero = (p > 0).to(p.dtype)
    count = torch.zeros(levels, dtype=p.dtype).index_add_(0, group, nonzero)
    return torch.where(p > 0, mass[group] / count[group].clamp(min=1), torch.zeros_like(p))


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    p = p / p.sum()
    q = q / q.sum().clamp(min=1e-12)
    mask = p > 0
    q = q[mask].clamp(min=1e-12)
    return float((p[mask] * torch.log(p[mask] / q)).sum())


def fake_quant_values(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, scheme: QScheme
) -> torch.Tensor:
    """Quantize then dequantize ``x`` (no gradient tricks): ``(clamp(round(x/s)+z) - z) * s``.

    Example:
        >>> x = torch.tensor([0.0, 0.26, 10.0])
        >>> out = fake_quant_values(x, torch.tensor(0.1), torch.tensor(0), QScheme(bits=4))
        >>> [round(v, 4) for v in out.tolist()]  # 10.0 clips to 7 steps of 0.1
        [0.0, 0.3, 0.7]
    """
    qmin, qmax = scheme.range
    z = zero.to(x.dtype)
    return (torch.clamp(torch.round(x / scale) + z, qmin, qmax) - z) * scale


def make_observer(name: str, scheme: QScheme, **options: float) -> Observer:
    """An observer by name: ``minmax``, ``moving-average``, ``percentile``, ``mse``, ``entropy``.

    Example:
        >>> type(make_observer("mse", QScheme())).__name__
        'MSEObserver'
    """
    classes = {
        "minmax": MinMaxObserver,
        "moving-average": MovingAverageObserver,
        "percentile": PercentileObserver,
        "mse": MSEObserver,
        "entropy": EntropyObserver,
    }
    if name not in classes:
        raise SlimkitError(f"unknown observer {name!r}; choose one of {', '.join(OBSERVERS)}")
    return classes[name](scheme, **options)
