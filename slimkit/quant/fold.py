"""Batch-norm folding: merge each BatchNorm into the convolution or linear layer before it.

Inference-time BN is an affine map per channel, ``y = gamma * (x - mean) / sqrt(var + eps) + beta``,
so it folds exactly into the preceding layer's weight and bias (Jacob et al. 2018, section 3.2;
Krishnamoorthi 2018, section 2.3). Quantizing the folded weights is what the integer kernels will
run, so folding comes before calibration.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from slimkit.errors import SlimkitError

FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_bn_into(layer: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn`` (in eval form) into ``layer``'s weight and bias, in place.

    Example:
        >>> conv, bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2).eval()
        >>> bn.running_mean.fill_(0.5); bn.running_var.fill_(4.0)  # doctest: +ELLIPSIS
        tensor(...)
        >>> x = torch.randn(1, 1, 5, 5)
        >>> expected = bn(conv(x))
        >>> fold_bn_into(conv, bn)
        >>> bool(torch.allclose(conv(x), expected, atol=1e-6))
        True
    """
    if bn.running_mean is None or bn.running_var is None:
        raise SlimkitError(f"{type(bn).__name__} without running statistics cannot be folded")
    with torch.no_grad():
        std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.affine else torch.ones_like(std)
        beta = bn.bias if bn.affine else torch.zeros_like(std)
        factor = gamma / std
        shape = [-1] + [1] * (layer.weight.dim() - 1)
        layer.weight.mul_(factor.reshape(shape))
        bias = layer.bias if layer.bias is not None else torch.zeros_like(std)
        new_bias = beta + (bias - bn.running_mean) * factor
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias.clone())
        else:
            layer.bias.copy_(new_bias)


def fold_batchnorm(graph_module: fx.GraphModule) -> list[tuple[str, str]]:
    """Fold every BatchNorm whose input is a Conv/Linear output used by nothing else.

    Works on a traced model; the BN call is removed from the graph and its module from the
    model. Returns the ``(layer, bn)`` names folded, so a checkpoint can redo the same folding.

    Example:
        >>> model = fx.symbolic_trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
        >>> fold_batchnorm(model.eval())
        [('0', '1')]
    """
    modules = dict(graph_module.named_modules())
    folded: list[tuple[str, str]] = []
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), NORMS):
            continue
        source = node.args[0]
        if not (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(modules.get(source.target), FOLDABLE)
            and len(source.users) == 1
        ):
            continue
        fold_bn_into(modules[source.target], modules[node.target])
        node.replace_all_uses_with(source)
        graph_module.graph.erase_node(node)
        folded.append((source.target, node.target))
    for _, bn_name in folded:
        _delete(graph_module, bn_name)
    graph_module.graph.lint()
    graph_module.recompile()
    return folded


def _delete(root: nn.Module, name: str) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, nn.Identity())
