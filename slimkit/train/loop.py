"""The seeded fit loop that every training, fine-tuning and retraining stage uses."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimkit.data import Dataset
from slimkit.measure import evaluate
from slimkit.measure.predict import forward_checked
from slimkit.progress import StatusBar
from slimkit.train.config import TrainConfig

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
StepHook = Callable[[int], None]
EpochHook = Callable[[int, float], None]


@dataclass
class TrainResult:
    """What a fit did: per-epoch history, best validation metric, epochs run and seconds.

    Example:
        >>> result = TrainResult(history=[{"epoch": 1, "loss": 0.5, "val": 0.9}], epochs_run=1)
        >>> result.epochs_run, result.history[-1]["val"]
        (1, 0.9)
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_val: float = float("nan")
    epochs_run: int = 0
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run repeats exactly.

    Example:
        >>> seed_everything(0)
        >>> first = (random.random(), np.random.rand(), torch.rand(1).item())
        >>> seed_everything(0)
        >>> first == (random.random(), np.random.rand(), torch.rand(1).item())
        True
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default loss: cross-entropy of the model's logits.

    Example:
        >>> round(cross_entropy(nn.Identity(), torch.zeros(1, 2), torch.tensor([0])).item(), 4)
        0.6931
    """
    return F.cross_entropy(model(x), y)


def fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig | None = None,
    *,
    loss_fn: LossFn = cross_entropy,
    step_hook: StepHook | None = None,
    epoch_hook: EpochHook | None = None,
    quiet: bool | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data.train``; keep the weights of the best validation epoch.

    ``loss_fn`` lets distillation or regularisation swap the objective; ``step_hook(step)`` runs
    after every optimiser step (gradual pruning schedules use it); ``epoch_hook(epoch, val)``
    after every epoch's validation (a search's pruner uses it, and may raise to stop). Masks and
    fake-quantizers applied as parametrizations need no special handling here.

    Example:
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> data = load_data("digits")
        >>> model = build_model("mlp", data.input_shape, data.num_classes)
        >>> result = fit(model, data, TrainConfig(epochs=2), quiet=True)
        >>> result.epochs_run
        2
    """
    config = config or TrainConfig()
    with torch.no_grad():  # a clear error for data the model cannot take, before any step
        was_training = model.training
        forward_checked(model.eval(), data.train.x[:2], data.input_shape)
        model.train(was_training)
    seed_everything(config.seed)
    optimizer = _optimizer(model, config)
    scheduler = _scheduler(optimizer, config)
    result, best_state, stale, step = TrainResult(), None, 0, 0
    start = time.perf_counter()
    loader = data.train.loader(config.batch_size, shuffle=True, seed=config.seed)
    with StatusBar("training", config.epochs, quiet) as bar:
        for epoch in range(config.epochs):
            model.train()
            total, count = 0.0, 0
            for x, y in loader:
                if config.jitter:
                    x = shift(x, config.jitter)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model, x, y)
                loss.backward()
                optimizer.step()
                step += 1
                if step_hook is not None:
                    step_hook(step)
                total, count = total + loss.item() * len(y), count + len(y)
            scheduler.step()
            val = evaluate(model, data.val)
            result.history.append({"epoch": epoch + 1, "loss": total / max(count, 1), "val": val})
            result.epochs_run = epoch + 1
            if epoch_hook is not None:
                epoch_hook(epoch + 1, val)
            bar.advance(f"loss {total / max(count, 1):.4f} val {val:.4f}")
            if not val <= result.best_val:  # also true for the first epoch (best_val is nan)
                result.best_val, best_state, stale = val, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
            if config.patience is not None and stale >= config.patience:
                break
    if best_state is not None and config.patience is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    return result


def shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each image by a random whole number of pixels in [-max_shift, max_shift] per axis,
    filling with the image's minimum (the background), as in Hinton et al. 2015's jittered MNIST.

    Example:
        >>> seed_everything(0)
        >>> shift(torch.arange(9.0).reshape(1, 1, 3, 3), 1).tolist()
        [[[[0.0, 3.0, 4.0], [0.0, 6.0, 7.0], [0.0, 0.0, 0.0]]]]
    """
    pad = max_shift
    padded = F.pad(x, (pad, pad, pad, pad), value=float(x.min()))
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * pad + 1, (len(x), 2))
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(config.epochs, 1))
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, config.step_every, config.gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
