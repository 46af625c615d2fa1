"""Unstructured magnitude pruning: zero the smallest weights, per layer or globally.

Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks": weights
whose magnitude is small contribute least; remove them, then retrain the rest. Masks are ranked on
the *effective* weights, so weights pruned earlier (exact zeros) stay pruned in later rounds.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.prune.masks import effective_weight, set_mask


def check_sparsity(value: float, what: str = "sparsity") -> float:
    """Return ``value`` if it lies in [0, 1); otherwise an error that says what to do.

    Example:
        >>> check_sparsity(0.9)
        0.9
    """
    if not 0.0 <= value < 1.0:
        raise SlimkitError(
            f"{what} must be in [0, 1) (the share of weights removed), got {value}; "
            "1.0 would remove every weight, e.g. 0.95 keeps 5%"
        )
    return float(value)


def _keep_largest(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """A 0/1 mask pruning exactly ``n_prune`` entries, the smallest scores first.

    A stable sort breaks ties by position, so the count is exact even among equal magnitudes
    (e.g. the zeros left by an earlier round).
    """
    flat = scores.flatten()
    mask = torch.ones_like(flat)
    if n_prune > 0:
        order = torch.sort(flat, stable=True).indices
        mask[order[:n_prune]] = 0.0
    return mask.view_as(scores)


def layer_masks(
    layers: Mapping[str, nn.Module], sparsities: Mapping[str, float]
) -> dict[str, torch.Tensor]:
    """Per-layer masks: each layer loses exactly ``round(s * n)`` of its ``n`` weights.

    Example:
        >>> layer = nn.Linear(10, 10)
        >>> int(layer_masks({"fc": layer}, {"fc": 0.3})["fc"].sum())
        70
    """
    masks = {}
    for name, module in layers.items():
        share = check_sparsity(sparsities[name], f"sparsity of layer {name!r}")
        scores = effective_weight(module).abs()
        masks[name] = _keep_largest(scores, round(share * scores.numel()))
    return masks


def global_masks(layers: Mapping[str, nn.Module], sparsity: float) -> dict[str, torch.Tensor]:
    """Masks from one ranking of all layers' weights: exactly ``round(s * N)`` pruned in total.

    Large layers with many small weights (LeNet's fc1) end up sparser than small ones.

    Example:
        >>> a, b = nn.Linear(10, 10), nn.Linear(10, 10)
        >>> masks = global_masks({"a": a, "b": b}, 0.5)
        >>> int(sum(m.sum() for m in masks.values()))
        100
    """
    check_sparsity(sparsity)
    weights = {name: effective_weight(m).abs() for name, m in layers.items()}
    flat = torch.cat([w.flatten() for w in weights.values()])
    mask = _keep_largest(flat, round(sparsity * flat.numel()))
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = mask[start : start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def threshold_masks(layers: Mapping[str, nn.Module], threshold: float) -> dict[str, torch.Tensor]:
    """Masks pruning every weight whose magnitude is below ``threshold``.

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[0.05, 0.5]]))
        >>> threshold_masks({"fc": layer}, 0.1)["fc"].tolist()
        [[0.0, 1.0]]
    """
    if threshold < 0:
        raise SlimkitError(f"threshold must be >= 0, got {threshold}")
    return {
        name: (effective_weight(m).abs() >= threshold).to(torch.float32)
        for name, m in layers.items()
    }


def apply_masks(layers: Mapping[str, nn.Module], masks: Mapping[str, torch.Tensor]) -> None:
    """Install (or update) each layer's mask parametrization.

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> apply_masks({"fc": layer}, {"fc": torch.tensor([[0.0, 1.0]])})
        >>> (layer.weight == 0).tolist()
        [[True, False]]
    """
    for name, module in layers.items():
        set_mask(module, masks[name])


def magnitude_prune(
    layers: Mapping[str, nn.Module],
    sparsity: float | Mapping[str, float] | None = None,
    *,
    scope: str = "global",
    threshold: float | None = None,
) -> dict[str, torch.Tensor]:
    """Mask ``layers`` by weight magnitude and return the masks.

    ``sparsity`` is one share for all (``scope`` ``global`` ranks all layers together, ``layer``
    prunes each to the share), or a share per layer name; ``threshold`` prunes below a magnitude.

    Example:
        >>> from slimkit.models import build_model
        >>> from slimkit.layers import select_layers
        >>> layers = select_layers(build_model("lenet300", (1, 28, 28), 10))
        >>> masks = magnitude_prune(layers, 0.9)
        >>> round(1 - sum(m.sum() for m in masks.values()).item() / 266200, 3)
        0.9
    """
    if threshold is not None:
        masks = threshold_masks(layers, threshold)
    elif isinstance(sparsity, Mapping):
        masks = layer_masks(layers, sparsity)
    elif sparsity is None:
        raise SlimkitError("give a sparsity or a threshold")
    elif scope == "global":
        masks = global_masks(layers, sparsity)
    else:
        masks = layer_masks(layers, dict.fromkeys(layers, sparsity))
    apply_masks(layers, masks)
    return masks
