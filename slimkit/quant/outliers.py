"""The feed-forward block's outlier neurons in float, so per-tensor int8 ranges fit the rest.

In BERT-style encoders a handful of the FFN's hidden neurons fire far harder than all others on
the first token ([CLS], the attention sink): the "massive activations" of Sun et al. (2024). On
all-MiniLM-L6-v2 one or two of the 1,536 neurons in layers 0-3 reach 14 to 25 where no other
stays above 7, so one dynamic range for the GELU output (the input of the FFN's second Linear)
leaves the ordinary values a few levels each. As LLM.int8() (Dettmers et al. 2022, "LLM.int8():
8-bit Matrix Multiplication for Transformers at Scale") splits a matrix multiplication into its
outlier dimensions, computed in 16 bits, and the int8 rest, :func:`split_outlier_neurons` moves
those neurons, found once on calibration data, out of the FFN's two Linears (rows of the first,
columns of the second) into a float branch of their own. The float function is unchanged; the
int8 Linears lose one or two of 1,536 neurons and the branch costs two thin float MatMuls and
an Add per layer that has outliers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.quant.smooth import input_absmax

FLOAT_BRANCH = "*.output.outlier_*"  # the branch's Linears, for QuantConfig.skip
RATIO = 2.0  # an outlier's max |activation| is above RATIO x the layer's 99th percentile


def ffn_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The BERT-style layers of ``model`` (name -> layer with ``intermediate`` and ``output``).

    Example:
        >>> ffn_blocks(nn.Linear(2, 2))
        {}
    """
    return {
        name: layer
        for name, layer in model.named_modules()
        if isinstance(getattr(getattr(layer, "intermediate", None), "dense", None), nn.Linear)
        and isinstance(getattr(getattr(layer, "output", None), "dense", None), nn.Linear)
        and hasattr(layer.output, "LayerNorm")
    }


def find_outlier_neurons(
    model: nn.Module, run: Callable[[nn.Module], None], ratio: float = RATIO
) -> dict[str, list[int]]:
    """The FFN hidden neurons of each BERT-style layer whose largest |GELU output| while
    ``run(model)`` feeds calibration data exceeds ``ratio`` times the layer's 99th percentile
    (layer name -> neuron indices; layers without outliers are left out).

    Example:
        >>> from slimkit.quant.transformer import load_minilm, tokenize
        >>> embedder, tok = load_minilm()  # doctest: +SKIP
        >>> batches = tokenize(tok, ["a film", "a long, dull film"])  # doctest: +SKIP
        >>> find_outlier_neurons(embedder, lambda m: [m(**b) for b in batches])  # doctest: +SKIP
        {'model.encoder.layer.0': [856], 'model.encoder.layer.1': [607], ...}
    """
    if ratio <= 1:
        raise SlimkitError(f"outlier ratio must be above 1, got {ratio}")
    blocks = ffn_blocks(model)
    if not blocks:
        return {}
    stats = input_absmax(model, [f"{name}.output.dense" for name in blocks], run)
    found = {}
    for name in blocks:
        absmax = stats[f"{name}.output.dense"]
        neurons = (absmax > ratio * absmax.quantile(0.99)).nonzero().flatten().tolist()
        if neurons:
            found[name] = neurons
    return found


class OutlierFFNOutput(nn.Module):
    """A BERT layer's FFN output (``LayerNorm(dense(h) + x)``) with some hidden neurons moved
    to a float branch: ``LayerNorm(dense(h) + outlier_out(act(outlier_in(x))) + x)``, where
    ``h`` now omits those neurons. Built by :func:`split_outlier_neurons`.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> _ = torch.manual_seed(0)
        >>> out = NS(dense=nn.Linear(8, 4), LayerNorm=nn.LayerNorm(4), dropout=nn.Identity())
        >>> layer = NS(intermediate=NS(dense=nn.Linear(4, 8), intermediate_act_fn=nn.GELU()),
        ...            output=out)
        >>> x, gelu = torch.randn(3, 4), nn.functional.gelu
        >>> before = out.LayerNorm(out.dense(gelu(layer.intermediate.dense(x))) + x)
        >>> split = OutlierFFNOutput(layer, [5])  # neuron 5 leaves the first Linear too
        >>> h = gelu(layer.intermediate.dense(x))
        >>> h.shape[1], torch.allclose(split(h, x), before, atol=1e-5)
        (7, True)
    """

    def __init__(self, layer: nn.Module, neurons: list[int]) -> None:
        super().__init__()
        first, second = layer.intermediate.dense, layer.output.dense
        taken = torch.tensor(sorted(set(neurons)))
        kept = torch.ones(first.out_features, dtype=torch.bool)
        kept[taken] = False
        self.outlier_in = _linear(first.weight[taken], first.bias[taken])
        self.outlier_out = _linear(second.weight[:, taken], None)
        self.dense = _linear(second.weight[:, kept], second.bias)
        self.act = layer.intermediate.intermediate_act_fn
        self.LayerNorm, self.dropout = layer.output.LayerNorm, layer.output.dropout
        layer.intermediate.dense = _linear(first.weight[kept], first.bias[kept])

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        outliers = self.outlier_out(self.act(self.outlier_in(input_tensor)))
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + outliers + input_tensor)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def split_outlier_neurons(model: nn.Module, neurons: dict[str, list[int]]) -> nn.Module:
    """Move the given FFN neurons of each named layer to a float branch, in place (see
    :class:`OutlierFFNOutput`); returns ``model``. Quantize with ``skip=[FLOAT_BRANCH]``.

    Example:
        >>> from slimkit.quant.transformer import load_minilm
        >>> embedder, _ = load_minilm()  # doctest: +SKIP
        >>> split_outlier_neurons(embedder, {"model.encoder.layer.0": [856]})  # doctest: +SKIP
    """
    blocks = ffn_blocks(model)
    for name, indices in neurons.items():
        if name not in blocks:
            raise SlimkitError(f"{name}: not a BERT-style layer with an FFN")
        if isinstance(blocks[name].output, OutlierFFNOutput):
            raise SlimkitError(f"{name}: outlier neurons already split")
        width = blocks[name].intermediate.dense.out_features
        if not indices or min(indices) < 0 or max(indices) >= width or len(indices) >= width:
            raise SlimkitError(f"{name}: outlier neurons must be some of 0..{width - 1}")
        blocks[name].output = OutlierFFNOutput(blocks[name], indices)
    return model
