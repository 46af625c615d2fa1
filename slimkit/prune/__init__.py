"""Pruning: unstructured magnitude pruning with one-shot, iterative and gradual schedules,
sensitivity analysis, and structured pruning that removes whole neurons and channels.

Example:
    >>> from slimkit.data import load_data
    >>> from slimkit.models import build_model
    >>> from slimkit.prune import prune
    >>> data = load_data("digits")
    >>> model = build_model("lenet300", data.input_shape, data.num_classes)
    >>> result = prune(model, data=data, sparsity=0.8, retrain={"epochs": 1})
    >>> result.sparsity
    0.8
"""

from slimkit.layers import select_layers
from slimkit.prune.api import PruneResult, prune
from slimkit.prune.config import PruneConfig
from slimkit.prune.magnitude import global_masks, layer_masks, magnitude_prune, threshold_masks
from slimkit.prune.masks import WeightMask, finalize, mask_of, set_mask, sparsity
from slimkit.prune.schedule import GradualPruner, agp_sparsity, iterative_sparsities
from slimkit.prune.sensitivity import allocate, plot_sensitivity, sensitivity
from slimkit.prune.structured import dependency_graph, structured_prune

__all__ = [
    "GradualPruner",
    "PruneConfig",
    "PruneResult",
    "WeightMask",
    "agp_sparsity",
    "allocate",
    "dependency_graph",
    "finalize",
    "global_masks",
    "iterative_sparsities",
    "layer_masks",
    "magnitude_prune",
    "mask_of",
    "plot_sensitivity",
    "prune",
    "select_layers",
    "sensitivity",
    "set_mask",
    "sparsity",
    "structured_prune",
    "threshold_masks",
]
