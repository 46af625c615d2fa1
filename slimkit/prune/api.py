"""One entry call, :func:`prune`, for every pruning method and schedule."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from slimkit.data import Dataset
from slimkit.errors import SlimkitError
from slimkit.layers import matches, select_layers
from slimkit.models.spec import SPEC_ATTR
from slimkit.prune.config import PruneConfig
from slimkit.prune.magnitude import magnitude_prune
from slimkit.prune.masks import effective_weight, finalize
from slimkit.prune.schedule import GradualPruner, scaled
from slimkit.prune.sensitivity import Curves, allocate, sensitivity
from slimkit.prune.structured import structured_prune
from slimkit.train import TrainConfig, fit
from slimkit.train.loop import LossFn, cross_entropy


@dataclass
class PruneResult:
    """What :func:`prune` did: the model (a new object for structured pruning), per-layer
    weights and non-zeros, the layers or groups left whole and why, and retraining history.

    Example:
        >>> PruneResult(nn.Linear(4, 2), sparsity=0.5).summary()
        {'sparsity': 0.5, 'layers': {}, 'skipped': {}, 'retrain_epochs': 0}
    """

    model: nn.Module
    sparsity: float = 0.0
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    macs_before: int | None = None
    macs_after: int | None = None
    allocation: dict[str, float] | None = None
    sensitivity: Curves | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts for a report (the model itself left out)."""
        out = {
            "sparsity": round(self.sparsity, 6),
            "layers": self.layers,
            "skipped": self.skipped,
            "retrain_epochs": len(self.history),
        }
        if self.macs_before is not None:
            out.update(macs_before=self.macs_before, macs_after=self.macs_after)
        if self.allocation is not None:
            out["allocation"] = {k: round(v, 4) for k, v in self.allocation.items()}
        return out


def _config(config: PruneConfig | dict[str, Any] | None, settings: dict[str, Any]) -> PruneConfig:
    if config is not None and not isinstance(config, (PruneConfig, dict)):
        raise SlimkitError(
            f"prune: config must be a PruneConfig or a dict, not {type(config).__name__} "
            "(pass the data set as data=...)"
        )
    if isinstance(config, PruneConfig) and not settings:
        return config
    raw = {**(config.model_dump(exclude_unset=True) if isinstance(config, PruneConfig) else {})}
    raw.update(config if isinstance(config, dict) else {})
    raw.update(settings)
    try:
        return PruneConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise SlimkitError(f"prune: {where}: {err['msg']}") from None


def prune(
    model: nn.Module,
    config: PruneConfig | dict[str, Any] | None = None,
    data: Dataset | None = None,
    *,
    loss_fn: LossFn = cross_entropy,
    quiet: bool | None = True,
    **settings: Any,
) -> PruneResult:
    """Prune ``model`` as ``config`` (or keyword ``settings``) says; retrain on ``data``.

    Magnitude pruning masks ``model`` in place (``result.model is model``); structured pruning
    returns a new, smaller model and leaves ``model`` unchanged. Without ``data`` nothing is
    retrained (and the ``sensitivity`` allocation, the ``gradual`` schedule and the ``taylor``
    criterion, which need data, are refused).

    Example:
        >>> from slimkit.models import build_model
        >>> model = build_model("lenet300", (1, 8, 8), 10)
        >>> prune(model, sparsity=0.9, retrain=None).sparsity
        0.9
        >>> small = prune(model, method="structured", sparsity=0.5, retrain=None).model
        >>> small[1].out_features
        150
    """
    cfg = _config(config, settings)
    start = time.perf_counter()
    if cfg.method == "structured":
        result = _structured(model, cfg, data, loss_fn, quiet)
    else:
        result = _magnitude(model, cfg, data, loss_fn, quiet)
    result.seconds = round(time.perf_counter() - start, 3)
    return result


# -- unstructured -------------------------------------------------------------------------------
def _retrain_config(cfg: PruneConfig, data: Dataset | None) -> TrainConfig | None:
    if data is None or cfg.retrain is None:
        if data is None and "retrain" in cfg.model_fields_set and cfg.retrain is not None:
            warnings.warn("prune: no data given, so 'retrain' is skipped", stacklevel=4)
        return None
    return cfg.retrain


def _targets(cfg: PruneConfig, layers: dict[str, nn.Module], data: Dataset | None, result):
    """The sparsity target: one share (global or per layer), or a share per layer."""
    if cfg.allocation == "sensitivity":
        if data is None:
            raise SlimkitError("allocation 'sensitivity' sweeps on the validation split: pass data")
        model = result.model
        result.sensitivity = sensitivity(layers, model, data.val, cfg.sweep)
        sizes = {name: m.weight.numel() for name, m in layers.items()}
        result.allocation = allocate(result.sensitivity, sizes, cfg.target)
        return result.allocation
    if cfg.sparsities:
        for pattern in cfg.sparsities:
            if not any(matches(name, pattern) for name in layers):
                raise SlimkitError(
                    f"'sparsities' pattern {pattern!r} matches no selected layer; "
                    f"selected: {', '.join(layers)}"
                )
        default = cfg.sparsity or 0.0
        return {
            name: next((s for p, s in cfg.sparsities.items() if matches(name, p)), default)
            for name in layers
        }
    return cfg.target


def _magnitude(model, cfg: PruneConfig, data, loss_fn, quiet) -> PruneResult:
    result = PruneResult(model=model)
    layers = select_layers(model, cfg.layers, cfg.exclude, cfg.types)
    target = None if cfg.threshold is not None else _targets(cfg, layers, data, result)
    retrain = _retrain_config(cfg, data)

    def step(share):
        magnitude_prune(layers, share, scope=cfg.scope, threshold=cfg.threshold)

    def train(**kwargs) -> None:
        if retrain is not None:
            run = fit(model, data, retrain, loss_fn=loss_fn, quiet=quiet, **kwargs)
            result.history += run.history

    if cfg.schedule == "gradual":
        if retrain is None:
            raise SlimkitError("the gradual schedule prunes while retraining: pass data")
        hook = _gradual_hook(cfg, layers, target, data, retrain)
        train(step_hook=hook)
        step(target)  # exact final target, also if early stopping restored an earlier epoch
    elif cfg.schedule == "iterative":
        for k in range(cfg.iterations):
            step(target if target is None else scaled(target, (k + 1) / cfg.iterations))
            train()
    else:
        step(target)
        train()
    _layer_stats(layers, result)
    if cfg.finalize:
        finalize(model)
    return result


def _gradual_hook(cfg, layers, target, data, retrain: TrainConfig) -> GradualPruner:
    steps = math.ceil(len(data.train) / retrain.batch_size) * retrain.epochs
    span = max(1, int(cfg.end_fraction * steps) - cfg.start_step)
    n = max(1, span // cfg.frequency)
    return GradualPruner(
        layers, target, initial=cfg.initial_sparsity, start=cfg.start_step,
        n=n, every=cfg.frequency, scope=cfg.scope,
    )  # fmt: skip


def _layer_stats(layers: dict[str, nn.Module], result: PruneResult) -> None:
    zeros = total = 0
    for name, module in layers.items():
        weight = effective_weight(module)
        nonzero = int(torch.count_nonzero(weight))
        result.layers[name] = {
            "params": weight.numel(),
            "nonzero": nonzero,
            "sparsity": round(1 - nonzero / weight.numel(), 6),
        }
        zeros, total = zeros + weight.numel() - nonzero, total + weight.numel()
    result.sparsity = round(zeros / total, 6) if total else 0.0


# -- structured ---------------------------------------------------------------------------------
def _example(model: nn.Module, data: Dataset | None) -> torch.Tensor:
    if data is not None and isinstance(data.train.x, torch.Tensor):
        return data.train.x[:2].clone()
    spec = getattr(model, SPEC_ATTR, None)
    if spec is None:
        raise SlimkitError(
            "structured pruning traces the model on an example input: pass data= "
            "(or build the model with slimkit, whose spec records the input shape)"
        )
    return torch.zeros(2, *spec.input_shape)


def _structured(model, cfg: PruneConfig, data, loss_fn, quiet) -> PruneResult:
    selected = select_layers(model, cfg.layers, cfg.exclude, cfg.types)
    batches: list = []
    if cfg.criterion == "taylor":
        if data is None:
            raise SlimkitError("criterion 'taylor' needs gradients on data: pass data")
        loader = data.train.loader(64, shuffle=True, seed=0)
        batches = [b for _, b in zip(range(cfg.taylor_batches), loader, strict=False)]
    sparsity = cfg.sparsity if cfg.macs_reduction is None else None
    if sparsity is None and cfg.macs_reduction is None:
        sparsity = cfg.target
    found = structured_prune(
        model, _example(model, data), sparsity=sparsity, macs_reduction=cfg.macs_reduction,
        criterion=cfg.criterion, layers=list(selected), round_to=cfg.round_to,
        leaf_modules=cfg.leaf_modules, batches=batches, loss_fn=loss_fn,
    )  # fmt: skip
    result = PruneResult(
        model=found.model, sparsity=found.ratio, skipped=found.skipped,
        macs_before=found.macs_before, macs_after=found.macs_after,
    )  # fmt: skip
    result.layers = {g["group"]: g for g in found.groups}
    retrain = _retrain_config(cfg, data)
    if retrain is not None:
        result.history = fit(found.model, data, retrain, loss_fn=loss_fn, quiet=quiet).history
    return result
