"""GPTQ: weights rounded to their grid so that the layer's output, not each weight, moves least.

Rounding to nearest treats every weight alone. GPTQ (Frantar et al., "GPTQ: Accurate
Post-Training Quantization for Generative Pre-trained Transformers", ICLR 2023) rounds one input
column at a time and spreads that column's rounding error over the columns not yet rounded,
weighted by the inverse of the input second moments ``H = E[x x^T]`` on calibration data (the
Optimal Brain Surgeon update). This follows the paper's Algorithm 1: dampening of ``H`` by 1% of
its mean diagonal, the Cholesky form of ``H^-1``, and lazy updates in blocks of 128 columns; the
columns go in decreasing order of ``H``'s diagonal ("act-order", from the authors' reference
implementation), which on MiniLM's int4 removes another 13-15% of the cosine loss.

The grid (scales) is fixed beforehand, as rounding to nearest would choose it ("static groups",
which act-order needs so that each group keeps one scale); only the integer codes change, so the
run-time cost is nil. Each layer's ``H`` comes from the float model's inputs
(the paper feeds each transformer block the outputs of the blocks already quantized).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.errors import SlimkitError
from slimkit.quant.hooks import watch_inputs

DAMP = 0.01  # dampening, as a fraction of H's mean diagonal (the paper's default)
BLOCK = 128  # columns per lazy batch update


def supports(layer: nn.Module) -> bool:
    """Whether GPTQ can round ``layer``'s weight: a Linear, or a Conv2d without groups (its
    inputs unfolded into patches). Other layers keep rounding to nearest.

    Example:
        >>> supports(nn.Linear(4, 2)), supports(nn.Conv2d(4, 4, 3, groups=4))
        (True, False)
    """
    return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1)


def _padded(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``x`` padded as ``conv`` pads it: numeric, ``'valid'`` or ``'same'`` (the extra row or
    column on the far side, as PyTorch does), with zeros or the layer's ``padding_mode``."""
    if conv.padding == "valid":
        return x
    pads: list[int] = []
    for i in (1, 0):  # F.pad takes the last axis (width) first
        if conv.padding == "same":
            total = conv.dilation[i] * (conv.kernel_size[i] - 1)
            pads += [total // 2, total - total // 2]
        else:
            pads += [conv.padding[i]] * 2
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    return F.pad(x, pads, mode=mode)


def _input_rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows that its flattened weight ``[out, in]`` multiplies.

    Example:
        >>> conv = nn.Conv2d(2, 3, 3, padding="same", padding_mode="reflect", bias=False)
        >>> x = torch.randn(1, 2, 5, 5)
        >>> rows = _input_rows(conv, x)  # one row per output position
        >>> torch.allclose(rows @ conv.weight.reshape(3, -1).T,
        ...                conv(x).permute(0, 2, 3, 1).reshape(-1, 3), atol=1e-6)
        True
    """
    if isinstance(layer, nn.Conv2d):
        patches = F.unfold(_padded(layer, x), layer.kernel_size, layer.dilation, 0, layer.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return x.reshape(-1, x.shape[-1])


def input_hessians(
    model: nn.Module, layers: list[str], batches: list[torch.Tensor | Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """``E[x x^T]`` over the input rows of each named layer (float64) while ``batches`` run
    through ``model``: input tensors, or a transformer's keyword batches, whose padded
    positions (``attention_mask`` 0) do not count.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 1))
        >>> input_hessians(net, ["0"], [torch.tensor([[1.0, 2.0], [3.0, 0.0]])])["0"]
        tensor([[5., 1.],
                [1., 2.]], dtype=torch.float64)
    """
    sums: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(layers, 0)
    mask: torch.Tensor | None = None  # the current batch's real positions, if it says

    def visit(name: str, layer: nn.Module, x: torch.Tensor) -> None:
        if mask is not None and not isinstance(layer, nn.Conv2d) and x.shape[:-1] == mask.shape:
            x = x[mask]
        rows = _input_rows(layer, x).float()  # one batch in float32 (fast), the sum in float64
        sums[name] = sums.get(name, 0) + (rows.T @ rows).double()
        counts[name] += len(rows)

    def run(model: nn.Module) -> None:
        nonlocal mask
        for batch in batches:
            if isinstance(batch, Mapping):
                given = batch.get("attention_mask")
                mask = given.bool() if given is not None else None
                model(**batch)
            else:
                mask = None
                model(batch)

    watch_inputs(model, layers, run, visit)
    return {name: sums[name] / counts[name] for name in layers}


def gptq_codes(
    weight: torch.Tensor, hessian: torch.Tensor, scale: torch.Tensor, bits: int
) -> torch.Tensor:
    """Integer codes in ``[-2^(b-1), 2^(b-1)-1]`` of ``weight`` ``[out, in]`` on the grid
    ``scale`` (``[out, in]``, or anything that broadcasts to it), chosen by GPTQ.

    Example:
        >>> w = torch.tensor([[0.3, 0.3]])  # two inputs that always move together
        >>> h = torch.ones(2, 2)
        >>> gptq_codes(w, h, torch.tensor(1.0), 2).tolist()  # nearest gives [[0, 0]]
        [[0, 1]]
    """
    w = weight.detach().double().reshape(weight.shape[0], -1).clone()
    scale = torch.as_tensor(scale).double().expand_as(w)
    inputs = w.shape[1]
    h = hessian.double().clone()
    dead = torch.diagonal(h) == 0  # inputs never seen: their weights cannot matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += DAMP * torch.diagonal(h).mean() * torch.eye(inputs, dtype=h.dtype)
    # act-order: the inputs with the largest second moments first, while many columns remain
    # to absorb their error; the grid is fixed beforehand, so the order changes no stored scale
    order = torch.argsort(torch.diagonal(h), descending=True, stable=True)
    w, h, scale = w[:, order], h[order][:, order], scale[:, order]
    try:  # the upper Cholesky factor of H^-1 holds every update GPTQ needs
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
        inverse = torch.linalg.cholesky(inverse, upper=True)
    except torch.linalg.LinAlgError:
        raise SlimkitError("GPTQ: the calibration inputs' Hessian is not positive definite "
                           "(give more calibration batches)") from None  # fmt: skip
    codes = torch.zeros_like(w)
    for start in range(0, inputs, BLOCK):
        end = min(start + BLOCK, inputs)
        block, inv = w[:, start:end].clone(), inverse[start:end, start:end]
        errors = torch.zeros_like(block)
        for i in range(end - start):
            column, step = block[:, i], scale[:, start + i]
            code = torch.clamp(torch.round(column / step), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            codes[:, start + i] = code
            errors[:, i] = (column - code * step) / inv[i, i]
            block[:, i:] -= errors[:, i : i + 1] @ inv[i : i + 1, i:]
        w[:, end:] -= errors @ inverse[start:end, end:]
    restored = torch.empty_like(codes)
    restored[:, order] = codes
    return restored.to(torch.int8)
