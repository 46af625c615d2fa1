"""Quantization-aware training: fine-tune through the fake quantizers.

The forward pass sees quantized weights and activations; gradients pass the rounding by the
straight-through estimator (Bengio et al. 2013; Jacob et al. 2018, section 3), and with
``lsq=True`` the step sizes are learned too (Esser et al. 2020). Batch norms were folded before,
so training updates the folded weights, the form that is exported.
"""

from __future__ import annotations

import torch
from torch import nn

from slimkit.data import Dataset
from slimkit.quant.config import QuantConfig
from slimkit.quant.fake import FakeQuant, WeightFakeQuant


def train_qat(model: nn.Module, data: Dataset, cfg: QuantConfig) -> None:
    """Fine-tune a calibrated fake-quantized model in place for ``cfg.qat_epochs`` epochs.

    Weight ranges follow the weights: each weight quantizer is recalibrated at the end (unless its
    step size is learned), and float weights are clipped to their grid for export.

    Example:
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> from slimkit.quant import quantize
        >>> data = load_data("digits")
        >>> q = quantize(build_model("mlp", data.input_shape, 10), mode="qat", qat_epochs=1,
        ...              data=data)
        >>> sum(1 for _ in q.parameters()) > 0
        True
    """
    from slimkit.train import TrainConfig, fit

    if cfg.qat_epochs == 0:
        return
    config = TrainConfig(
        epochs=cfg.qat_epochs, lr=cfg.qat_lr, optimizer="adam", batch_size=cfg.batch_size
    )
    fit(model, data, config, quiet=True)
    model.eval()
    for layer in model.modules():
        quant = _weight_quant(layer)
        if quant is None:
            continue
        original = layer.parametrizations.weight.original
        if not quant.learn:
            from slimkit.quant.observers import make_observer

            quant.observer = make_observer("minmax", quant.scheme)
            quant.calibrate(original.detach())
            quant.observer = None
        else:
            quant.clip_(original.detach())
    for quant in model.modules():
        if isinstance(quant, FakeQuant) and quant.learn:
            with torch.no_grad():
                quant.scale.abs_().clamp_(min=1e-8)  # a step size must stay positive


def _weight_quant(layer: nn.Module) -> WeightFakeQuant | None:
    params = getattr(layer, "parametrizations", None)
    if params is None or "weight" not in params:
        return None
    quant = params.weight[0]
    return quant if isinstance(quant, WeightFakeQuant) else None
