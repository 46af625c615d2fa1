"""Clustering each layer's weights and attaching the shared-weight parametrization."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.cluster import KMeans
from torch import nn
from torch.nn.utils import parametrize

from slimkit.cluster.sharing import SharedWeight
from slimkit.errors import SlimkitError
from slimkit.layers import bits_for, select_layers


class ClusterConfig(BaseModel):
    """Settings of weight sharing.

    Example:
        >>> ClusterConfig(bits=5, layer_bits={"features.*": 8}).init
        'linear'
    """

    model_config = ConfigDict(extra="forbid")

    bits: int = Field(5, ge=1, le=8, description="index bits: 2**bits shared values per layer")
    layer_bits: dict[str, int] = Field(
        default_factory=dict, description="per-layer bits by name pattern (fnmatch)"
    )
    layers: list[str] | None = Field(None, description="name patterns; None = every Conv/Linear")
    init: str = Field(
        "linear",
        pattern="^(linear|density|random)$",
        description="centroid initialisation (Han et al. 2016, section 3.1)",
    )
    seed: int = 0


def cluster(model: nn.Module, config: ClusterConfig | None = None) -> nn.Module:
    """Share each selected layer's non-zero weights among ``2**bits`` values (``2**bits - 1``
    when the layer has zeros, so that the zero and the shared values fit in ``bits``), in place.

    The layers get a :class:`SharedWeight` parametrization, so training the model (e.g. with
    :func:`slimkit.fit`) fine-tunes the shared values; :func:`finalize` bakes them in.

    Example:
        >>> from slimkit.models import build_model
        >>> model = cluster(build_model("lenet300", (1, 28, 28), 10), ClusterConfig(bits=4))
        >>> len(torch.unique(model[1].weight))
        16
    """
    config = config or ClusterConfig()
    for value in config.layer_bits.values():
        if not 1 <= value <= 8:
            raise SlimkitError(f"layer_bits values must be in 1..8, got {value}")
    for name, layer in select_layers(model, config.layers or ("*",)).items():
        if parametrize.is_parametrized(layer, "weight"):
            if any(isinstance(p, SharedWeight) for p in layer.parametrizations.weight):
                raise SlimkitError(f"layer {name!r} is already clustered")
            parametrize.remove_parametrizations(layer, "weight")  # bake e.g. a pruning mask in
        bits = bits_for(name, config.bits, config.layer_bits)
        # A pruned layer's zero takes one of the 2**bits codes (as Deep Compression's filler
        # zero does), so its non-zeros share one value fewer and indices still fit in ``bits``.
        pruned = bool((layer.weight == 0).any())
        centroids, assignment = _kmeans(layer.weight.detach(), 2**bits - pruned, config)
        parametrize.register_parametrization(
            layer, "weight", SharedWeight(centroids, assignment), unsafe=True
        )
        layer.parametrizations.weight.original.requires_grad_(False)  # unused by the forward
    return model


def finalize(model: nn.Module) -> nn.Module:
    """Replace every shared-weight parametrization by the plain weight it produces.

    Example:
        >>> model = finalize(cluster(nn.Sequential(nn.Linear(16, 4)), ClusterConfig(bits=2)))
        >>> parametrize.is_parametrized(model[0]), len(torch.unique(model[0].weight))
        (False, 4)
    """
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight") and any(
            isinstance(p, SharedWeight) for p in module.parametrizations.weight
        ):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            module.weight.requires_grad_(True)
    return model


def shared_values(model: nn.Module) -> dict[str, int]:
    """Number of distinct non-zero values per Conv/Linear weight (a check of clustering).

    Example:
        >>> shared_values(cluster(nn.Sequential(nn.Linear(16, 4)), ClusterConfig(bits=2)))
        {'0': 4}
    """
    return {
        name: int(torch.unique(m.weight[m.weight != 0]).numel())
        for name, m in select_layers(model).items()
    }


def _kmeans(
    weight: torch.Tensor, k: int, config: ClusterConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    if not torch.isfinite(weight).all():
        raise SlimkitError("cannot cluster weights that contain NaN or infinity")
    flat = weight.reshape(-1).numpy().astype(np.float64)
    nonzero = np.flatnonzero(flat)
    values = flat[nonzero]
    assignment = np.full(flat.shape, -1, dtype=np.int64)
    if values.size == 0:
        return torch.zeros(1), torch.from_numpy(assignment).reshape(weight.shape)
    k = min(k, np.unique(values).size)
    km = KMeans(k, init=_init(values, k, config), n_init=1, random_state=config.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty-cluster and convergence chatter
        assignment[nonzero] = km.fit_predict(values[:, None])
    centroids = torch.from_numpy(km.cluster_centers_[:, 0]).float()
    return centroids, torch.from_numpy(assignment).reshape(weight.shape)


def _init(values: np.ndarray, k: int, config: ClusterConfig) -> np.ndarray:
    """Centroid initialisation: linear (evenly spaced over [min, max], the paper's choice),
    density (evenly spaced quantiles of the weight CDF) or random (sampled weights)."""
    if config.init == "linear":
        points = np.linspace(values.min(), values.max(), k)
    elif config.init == "density":
        points = np.quantile(values, np.linspace(0, 1, k))
    else:
        points = np.random.default_rng(config.seed).choice(values, k, replace=False)
    return points[:, None]
