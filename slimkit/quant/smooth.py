"""SmoothQuant (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training
Quantization for Large Language Models"): move activation outliers into the weights.

A few channels of a transformer's activations are far larger than the rest, so one scale per
tensor leaves the others with few levels. For a Linear ``y = x W^T``, dividing input channel j by
``s_j`` and multiplying weight column j by ``s_j`` changes nothing in float, and with
``s_j = max|x_j|^alpha / max|W_:,j|^(1-alpha)`` (eq. 4) both factors quantize well. The division
folds into a preceding LayerNorm (its weight and bias); where no such layer exists (the FFN's
second Linear, after GELU), a per-channel ``Mul`` stays in the graph.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.quant.hooks import watch_inputs


@dataclass
class SmoothGroup:
    """Linears that read the same input, and the LayerNorm producing it (None: insert a Mul).

    Example:
        >>> SmoothGroup(["layer.0.attention.self.query", "layer.0.attention.self.key"]).norm is None
        True
    """

    linears: list[str]
    norm: str | None = None


SAMPLE_ROWS = 4096  # input rows kept per layer for the alpha search


def input_absmax(
    model: nn.Module,
    layers: list[str],
    run: Callable[[nn.Module], None],
    samples: dict[str, list[torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-channel max |input| of each named Linear while ``run(model)`` feeds calibration data.

    The input is seen as the Linear's forward receives it: after the layer's own forward
    pre-hooks, such as :func:`smooth`'s scaling.

    With ``samples`` given, each batch's input rows are also kept there (up to ``SAMPLE_ROWS``
    rows per layer), for :func:`choose_alpha`.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> input_absmax(net, ["0"], lambda m: m(torch.tensor([[1.0, -3.0]])))["0"].tolist()
        [1.0, 3.0]
    """
    stats: dict[str, torch.Tensor] = {}

    def visit(name: str, layer: nn.Module, x: torch.Tensor) -> None:
        rows = x.reshape(-1, x.shape[-1]).float()
        peak = rows.abs().amax(0)
        stats[name] = peak if name not in stats else torch.maximum(stats[name], peak)
        if samples is not None:
            kept = samples.setdefault(name, [])
            if sum(len(r) for r in kept) < SAMPLE_ROWS:
                kept.append(rows)

    watch_inputs(model, layers, run, visit)
    return stats


ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)


def smoothing_factor(act: torch.Tensor, linears: list[nn.Linear], alpha: float) -> torch.Tensor:
    """SmoothQuant's ``s_j = max|x_j|^alpha / max|W_:,j|^(1-alpha)`` (Xiao et al. 2023, eq. 4).

    Example:
        >>> lin = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 1.0]]))
        >>> smoothing_factor(torch.tensor([100.0, 1.0]), [lin], alpha=0.5).tolist()
        [10.0, 1.0]
    """
    weight = torch.stack([lin.weight.detach().abs().amax(0) for lin in linears]).amax(0)
    return (act.clamp(min=1e-5) ** alpha / weight.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)


def choose_alpha(
    x: torch.Tensor,
    act: torch.Tensor,
    linears: list[nn.Linear],
    alphas: tuple[float, ...] = ALPHAS,
    act_quant: nn.Module | None = None,
    weight_quant: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """The migration strength whose int8 output (dynamic activations, int8 weights) is closest
    to the float output on sample inputs ``x`` (a per-layer search, as in the SmoothQuant
    paper's appendix and Intel Neural Compressor's auto-tuning).

    ``act_quant`` is the run-time input quantizer (default: per tensor, as ONNX Runtime's
    ``DynamicQuantizeLinear``; per token for :mod:`slimkit.quant.per_token`), and
    ``weight_quant`` maps a weight to its deployed grid and back (default: dynamic int8 with
    default settings, :func:`~slimkit.quant.dynamic.weight_quantizer`): the search scores the
    int8 grids that will run.

    Example:
        >>> lin = nn.Linear(4, 2, bias=False)
        >>> x = torch.randn(64, 4) * torch.tensor([1.0, 1.0, 1.0, 50.0])  # one outlier channel
        >>> choose_alpha(x, x.abs().amax(0), [lin]) in ALPHAS
        True
    """
    from slimkit.quant.config import QuantConfig
    from slimkit.quant.dynamic import weight_quantizer
    from slimkit.quant.fake import DynamicActFakeQuant

    act_quant = act_quant or DynamicActFakeQuant()
    weight_quant = weight_quant or weight_quantizer(QuantConfig(mode="dynamic"))
    reference = [x @ lin.weight.detach().T for lin in linears]
    best, best_err = alphas[0], float("inf")
    for alpha in alphas:
        s = smoothing_factor(act, linears, alpha)
        xq = act_quant(x / s)
        err = 0.0
        for lin, ref in zip(linears, reference, strict=True):
            wq = weight_quant(lin.weight.detach() * s)
            err += float(((xq @ wq.T - ref) ** 2).mean())
        if err < best_err:
            best, best_err = alpha, err
    return best


def _scale_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0] * module.smooth_inv, *args[1:])


def smooth(
    model: nn.Module,
    groups: list[SmoothGroup],
    absmax: dict[str, torch.Tensor],
    alpha: float | dict[str, float] | None = 0.5,
    samples: dict[str, list[torch.Tensor]] | None = None,
    act_quant: nn.Module | None = None,
    weight_quant: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Apply SmoothQuant's per-channel migration to each group, in place (float outputs unchanged).

    ``alpha`` is one strength for every group, or one per group (named by its first Linear);
    ``None``, or a group missing from the dict, searches that group's alpha on ``samples``
    (see :func:`choose_alpha`, which takes ``act_quant`` and ``weight_quant``). Returns the
    alpha used per group.

    Example:
        >>> net = nn.Sequential(nn.LayerNorm(2), nn.Linear(2, 2))
        >>> x = torch.tensor([[1.0, -3.0], [0.5, 2.0]])
        >>> before = net(x)
        >>> stats = input_absmax(net, ["1"], lambda m: m(x))
        >>> smooth(net, [SmoothGroup(["1"], norm="0")], stats, alpha=0.5)
        {'1': 0.5}
        >>> bool(torch.allclose(net(x), before, atol=1e-5))
        True
    """
    chosen: dict[str, float] = {}
    for group in groups:
        linears = [model.get_submodule(name) for name in group.linears]
        act = absmax[group.linears[0]]
        a = alpha.get(group.linears[0]) if isinstance(alpha, dict) else alpha
        if a is None:
            if samples is None:
                raise SlimkitError("searching alpha needs sample inputs (samples=...)")
            x = torch.cat(samples[group.linears[0]])
            a = choose_alpha(x, act, linears, act_quant=act_quant, weight_quant=weight_quant)
        chosen[group.linears[0]] = a
        s = smoothing_factor(act, linears, a)
        with torch.no_grad():
            for lin in linears:
                lin.weight.mul_(s)
            if group.norm is not None:
                norm = model.get_submodule(group.norm)
                norm.weight.div_(s)
                if norm.bias is not None:
                    norm.bias.div_(s)
            else:
                inverse = 1.0 / s  # one tensor shared by the group: one Mul after export/CSE
                for lin in linears:
                    lin.register_buffer("smooth_inv", inverse)
                    lin.register_forward_pre_hook(_scale_input)
    return chosen


def bert_groups(model: nn.Module, norm_inputs_only: bool = False) -> list[SmoothGroup]:
    """Smoothing groups of a BERT-style Hugging Face encoder (BERT, MiniLM, RoBERTa).

    BERT normalises after the residual addition (post-LN), so a LayerNorm's output is also the
    residual stream and the smoothing cannot fold into it: every group gets an explicit
    per-channel scale (a ``Mul``, cheap next to the MatMul). Groups: query/key/value (one
    shared scale) and the FFN's first Linear, which read a LayerNorm's output, and unless
    ``norm_inputs_only``, the attention output and the FFN's second Linear (after GELU).
    slimkit's transformer path smooths only the first two: on all-MiniLM-L6-v2, smoothing the
    other two as well lowered the cosine to the float embeddings, per token and per tensor
    alike, and their Muls cost time.

    Example:
        >>> bert_groups(nn.Linear(2, 2))
        []
    """
    names = {name for name, _ in model.named_modules()}
    pattern = re.compile(r"^(.*)layer\.(\d+)\.attention\.self\.query$")
    groups = []
    for name in sorted(names):
        match = pattern.match(name)
        if not match:
            continue
        block = f"{match.group(1)}layer.{int(match.group(2))}"
        groups.append(
            SmoothGroup([f"{block}.attention.self.{p}" for p in ("query", "key", "value")])
        )
        groups.append(SmoothGroup([f"{block}.intermediate.dense"]))
        if not norm_inputs_only:
            groups.append(SmoothGroup([f"{block}.attention.output.dense"]))
            groups.append(SmoothGroup([f"{block}.output.dense"]))
    return groups


def balance_signs(model: nn.Module, groups: list[SmoothGroup], passes: int = 8) -> None:
    """Negate input channels of each group with an explicit smoothing ``Mul`` (its scale and
    its Linears' weight columns together, so float outputs are unchanged) to make the column
    sums of the int8 weights small.

    Per-token quantization subtracts each row's zero point inside the integer GEMM with extra
    weight rows holding minus those sums (:func:`slimkit.quant.per_token.correction_rows`);
    smaller sums need fewer rows. Greedy sign flips, a few passes over the channels.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 2))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.tensor([[1.0, 1, 1, -0.5], [1.0, 1, 1, 0.5]]))
        >>> net[0].register_buffer("smooth_inv", torch.ones(4))
        >>> net[0].weight.sum(1).tolist()
        [2.5, 3.5]
        >>> balance_signs(net, [SmoothGroup(["0"])])
        >>> net[0].weight.sum(1).tolist()
        [0.5, 1.5]
    """
    for group in groups:
        linears = [model.get_submodule(name) for name in group.linears]
        if group.norm is not None or not all(hasattr(lin, "smooth_inv") for lin in linears):
            continue
        with torch.no_grad():
            w = torch.cat([lin.weight for lin in linears]).double()  # [N, K]
            q = (w / w.abs().amax(1, keepdim=True).clamp(min=1e-12) * 127).T  # int8 grid [K, N]
            signs = torch.ones(q.shape[0], dtype=q.dtype)
            total = q.sum(0)
            for _ in range(passes):
                flipped = False
                for k in range(q.shape[0]):
                    trial = total - 2 * signs[k] * q[k]
                    if trial.square().sum() < total.square().sum():
                        total, signs[k], flipped = trial, -signs[k], True
                if not flipped:
                    break
            signs = signs.float()
            for lin in linears:
                lin.weight.mul_(signs)
            for inverse in {id(lin.smooth_inv): lin.smooth_inv for lin in linears}.values():
                inverse.mul_(signs)  # usually one tensor shared by the group
