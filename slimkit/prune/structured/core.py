"""Structured pruning: remove whole neurons, filters and channels so layers really shrink.

Importance criteria, per channel of a dependency group (summed over every layer of the group):

- ``l1`` / ``l2``: norm of each output filter (Li et al. 2017, "Pruning Filters for Efficient
  ConvNets");
- ``bn``: magnitude of the batch-norm scale gamma (Liu et al. 2017, "Learning Efficient
  Convolutional Networks through Network Slimming"); groups without batch norm fall back to ``l1``;
- ``taylor``: first-order Taylor estimate of the loss change, ``(sum_s g_s w_s)^2`` over the
  channel's parameters, averaged over mini-batches (Molchanov et al. 2019, "Importance Estimation
  for Neural Network Pruning").

Each prunable group loses the same share of its channels (the lowest-ranked ones); a MAC target
is reached by bisecting that share. The pruned model is always checked with a forward pass.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.layers import matches
from slimkit.measure import count_macs
from slimkit.measure._common import eval_mode, first_line
from slimkit.prune.structured.graph import DependencyGraph, Layout, Use, dependency_graph
from slimkit.prune.structured.shrink import replace_module, shrink_channelwise, shrink_layer

CRITERIA = ("l1", "l2", "bn", "taylor")


@dataclass
class StructuredResult:
    """The pruned model, what each group lost, and the groups left whole with the reason why.

    Example:
        >>> result = StructuredResult(nn.Linear(4, 2), macs_before=8, macs_after=4, ratio=0.5)
        >>> result.macs_after / result.macs_before, result.skipped
        (0.5, {})
    """

    model: nn.Module
    groups: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    macs_before: int = 0
    macs_after: int = 0
    ratio: float = 0.0


def _offsets(graph: DependencyGraph, layout: Layout, root: int) -> list[tuple[int, int]]:
    """(start, repeat) of each segment of ``layout`` that belongs to group ``root``."""
    found, start = [], 0
    for seg in layout:
        if graph.find(seg.space) == root:
            found.append((start, seg.repeat))
        start += seg.size * seg.repeat
    return found


def _filter_norms(weight: torch.Tensor, p: int) -> torch.Tensor:
    return weight.detach().flatten(1).norm(p=p, dim=1)


def _importance(graph: DependencyGraph, root: int, size: int, criterion: str) -> torch.Tensor:
    """Per-channel importance of group ``root`` by a data-free criterion."""
    score = torch.zeros(size)
    if criterion == "bn":
        for use in graph.uses.values():
            if use.role == "channelwise" and isinstance(use.module, nn.modules.batchnorm._NormBase):
                if use.module.weight is None:
                    continue
                for start, _ in _offsets(graph, use.layout, root):
                    score += use.module.weight.detach().abs()[start : start + size].cpu()
        if score.any():
            return score
    p = 2 if criterion == "l2" else 1
    for use in graph.uses.values():
        if use.out_space is not None and graph.find(use.out_space) == root:
            score += _filter_norms(use.module.weight, p).cpu()
    return score


def _per_channel(param: torch.Tensor | None) -> torch.Tensor | None:
    """Sum of grad * weight per row (output channel) of a parameter, or None without a grad."""
    if param is None or param.grad is None:
        return None
    product = (param.grad * param).detach()
    return (product.flatten(1).sum(1) if product.dim() > 1 else product).cpu()


def _channel_sums(graph: DependencyGraph, root: int, size: int) -> torch.Tensor:
    """Sum of grad * weight over each channel's parameters (after one backward pass)."""
    total = torch.zeros(size)
    for use in graph.uses.values():
        params = [getattr(use.module, "weight", None), getattr(use.module, "bias", None)]
        if use.out_space is not None and graph.find(use.out_space) == root:
            spans = [(0, 1)]
        elif use.role == "channelwise":
            spans = _offsets(graph, use.layout, root)
        else:
            continue
        for param in params:
            sums = _per_channel(param)
            for start, _ in spans if sums is not None else ():
                total += sums[start : start + size]
    return total


def taylor_importance(
    model: nn.Module,
    graph: DependencyGraph,
    roots: dict[int, int],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[int, torch.Tensor]:
    """Molchanov et al. 2019's first-order Taylor importance, averaged over ``batches``.

    Example:
        >>> from slimkit.models import build_model
        >>> model = build_model("lenet300", (1, 8, 8), 10)
        >>> graph = dependency_graph(model, torch.zeros(2, 1, 8, 8))
        >>> roots = {r: graph.sizes[r] for r in graph.groups() if not graph.blocked(r)}
        >>> batch = [(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))]
        >>> sorted(len(v) for v in taylor_importance(model, graph, roots, batch).values())
        [100, 300]
    """
    scores = {root: torch.zeros(size) for root, size in roots.items()}
    count = 0
    was_training = model.training
    model.eval()  # fixed BN statistics: the estimate should not move the model
    try:
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            loss = loss_fn(model, x, y) if loss_fn else F.cross_entropy(model(x), y)
            loss.backward()
            for root, size in roots.items():
                scores[root] += _channel_sums(graph, root, size) ** 2
            count += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if count == 0:
        raise SlimkitError("criterion 'taylor' needs data: pass data= with a training split")
    return {root: s / count for root, s in scores.items()}


def _keep_count(size: int, ratio: float, round_to: int) -> int:
    keep = max(1, size - math.floor(ratio * size + 1e-9))
    if round_to > 1 and keep < size:
        keep = min(size, max(round_to, math.ceil(keep / round_to) * round_to))
    return keep


def _keep_indices(scores: dict[int, torch.Tensor], ratio: float, round_to: int):
    keep = {}
    for root, score in scores.items():
        n = _keep_count(len(score), ratio, round_to)
        top = torch.sort(score, descending=True, stable=True).indices[:n]
        keep[root] = torch.sort(top).values
    return keep


def _layout_index(graph: DependencyGraph, layout: Layout, keep: dict[int, torch.Tensor]):
    parts, start = [], 0
    for seg in layout:
        root = graph.find(seg.space)
        channels = keep.get(root, torch.arange(seg.size))
        rows = channels[:, None] * seg.repeat + torch.arange(seg.repeat)[None, :]
        parts.append(start + rows.flatten())
        start += seg.size * seg.repeat
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def _apply(model: nn.Module, graph: DependencyGraph, keep: dict[int, torch.Tensor]) -> None:
    """Replace every module touched by a pruned group with its sliced copy, in ``model``."""
    for use in graph.uses.values():
        module = model.get_submodule(use.name)
        keep_in = _layout_index(graph, use.layout, keep)
        if use.role == "channelwise":
            if len(keep_in) < _size(use):
                replace_module(model, use.name, shrink_channelwise(module, keep_in))
            continue
        root = graph.find(use.out_space)
        keep_out = keep.get(root, torch.arange(graph.sizes[use.out_space]))
        if len(keep_in) < _size(use) or root in keep:
            replace_module(model, use.name, shrink_layer(module, keep_out, keep_in))


def _size(use: Use) -> int:
    return sum(s.size * s.repeat for s in use.layout)


def _verify(model: nn.Module, example: torch.Tensor, shape: tuple[int, ...]) -> None:
    """A forward pass must work and give the original output shape; else nothing is returned."""
    try:
        with eval_mode(model), torch.no_grad():
            out = model(example)
    except Exception as exc:
        raise SlimkitError(
            f"structured pruning produced a model that fails its check ({first_line(exc)}); "
            "the original model is unchanged. Please report this model's structure"
        ) from None
    if tuple(out.shape) != tuple(shape):
        raise SlimkitError(
            f"structured pruning changed the output shape {tuple(shape)} to {tuple(out.shape)}; "
            "the original model is unchanged"
        )


def _group_name(graph: DependencyGraph, producers: list[str]) -> str:
    return producers[0] if len(producers) == 1 else f"{producers[0]} (+{len(producers) - 1} tied)"


def plan_groups(graph: DependencyGraph, selected: Sequence[str]) -> tuple[dict[int, int], dict]:
    """Prunable groups (root -> size) and, for the others, the reason they stay whole.

    Example:
        >>> from slimkit.models import build_model
        >>> model = build_model("lenet300", (1, 8, 8), 10)
        >>> plan_groups(dependency_graph(model, torch.zeros(2, 1, 8, 8)), ["*"])
        ({1: 300, 2: 100}, {'5': 'model output'})
    """
    prunable, skipped = {}, {}
    for root, producers in graph.groups().items():
        name = _group_name(graph, producers)
        reasons = graph.blocked(root)
        unselected = [p for p in producers if not any(matches(p, s) for s in selected)]
        if reasons:
            skipped[name] = "; ".join(reasons)
        elif unselected:
            skipped[name] = f"tied to layers not selected for pruning: {', '.join(unselected)}"
        elif graph.sizes[root] < 2:
            skipped[name] = "a single channel"
        else:
            prunable[root] = graph.sizes[root]
    return prunable, skipped


def structured_prune(
    model: nn.Module,
    example: torch.Tensor,
    *,
    sparsity: float | None = None,
    macs_reduction: float | None = None,
    criterion: str = "l1",
    layers: Sequence[str] = ("*",),
    round_to: int = 1,
    leaf_modules: Sequence[str] = (),
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = (),
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> StructuredResult:
    """Remove the least important channels of every prunable group; ``model`` is not changed.

    ``sparsity`` is the share of channels each group loses; ``macs_reduction`` instead finds
    the share that removes that fraction of the MACs. ``example`` is a batch of inputs (2 or
    more rows) used to trace shapes and to check the result.

    Example:
        >>> from slimkit.models import build_model
        >>> model = build_model("resnet20", (1, 8, 8), 10)
        >>> result = structured_prune(model, torch.zeros(2, 1, 8, 8), sparsity=0.5)
        >>> result.model.conv1.out_channels, model.conv1.out_channels
        (8, 16)
    """
    if criterion not in CRITERIA:
        raise SlimkitError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    graph = dependency_graph(model, example, leaf_modules)
    prunable, skipped = plan_groups(graph, layers)
    if criterion == "taylor":
        scores = taylor_importance(model, graph, prunable, batches, loss_fn)
    else:
        scores = {r: _importance(graph, r, size, criterion) for r, size in prunable.items()}
    input_shape = tuple(example.shape[1:])
    before = count_macs(model, input_shape)

    ratio = sparsity
    if ratio is None:
        ratio = _ratio_for_macs(model, graph, scores, input_shape, macs_reduction, round_to)
    keep = _keep_indices(scores, ratio, round_to)
    pruned = copy.deepcopy(model)
    _apply(pruned, graph, keep)
    _verify(pruned, example, graph.output_shape)
    after = count_macs(pruned, input_shape)
    groups = [
        {"group": _group_name(graph, graph.groups()[r]), "layers": graph.groups()[r],
         "channels": graph.sizes[r], "kept": len(keep[r])}
        for r in prunable
    ]  # fmt: skip
    return StructuredResult(pruned, groups, skipped, before, after, ratio)


def _module_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """MACs per example of each Conv/Linear layer, by name (forward hooks, like count_macs)."""
    from slimkit.measure.counts import _layer_macs

    names = {
        m: n
        for n, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
    }
    found: dict[str, int] = {}

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        found[names[module]] = found.get(names[module], 0) + _layer_macs(module, output)

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return found


def _macs_after(graph: DependencyGraph, macs: dict[str, int], keep: dict[int, torch.Tensor]):
    """MACs once ``keep`` is applied: each layer's MACs scale with its kept inputs and outputs."""
    total = sum(macs.values())
    for use in graph.uses.values():
        if use.name not in macs:
            continue  # BatchNorm: no MACs
        size = _size(use)
        share = len(_layout_index(graph, use.layout, keep)) / size if size else 1.0
        if use.out_space is not None and graph.find(use.out_space) in keep:
            share *= len(keep[graph.find(use.out_space)]) / graph.sizes[use.out_space]
        total -= macs[use.name] * (1 - share)
    return total


def _ratio_for_macs(
    model: nn.Module, graph, scores, input_shape, target: float | None, round_to: int
) -> float:
    """Bisect the per-group share until the MACs fall by ``target`` (or as far as they can)."""
    if target is None:
        raise SlimkitError("give 'sparsity' (share of channels) or 'macs_reduction'")
    macs = _module_macs(model, input_shape)
    before = sum(macs.values())

    def reduction(ratio: float) -> float:
        return 1 - _macs_after(graph, macs, _keep_indices(scores, ratio, round_to)) / before

    lo, hi = 0.0, 0.99
    if reduction(hi) < target:
        raise SlimkitError(
            f"removing {target:.0%} of the MACs is impossible: the prunable layers hold fewer; "
            "lower 'macs_reduction' or allow more layers"
        )
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reduction(mid) < target else (lo, mid)
    return hi
