"""One entry call, :func:`quantize`, for every mode, and the checkpoint factory that rebuilds a
quantized model from its spec (so recipes checkpoint and resume quantized models too)."""

from __future__ import annotations

import copy
import functools
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.data import Dataset
from slimkit.errors import SlimkitError
from slimkit.models import ModelSpec, model_from_spec
from slimkit.models.registry import BUILDERS
from slimkit.models.spec import SPEC_ATTR
from slimkit.quant.config import QuantConfig, as_config
from slimkit.quant.fake import ActFakeQuant, FakeQuant
from slimkit.quant.observers import QScheme
from slimkit.quant.prepare import META, calibrate, prepare_static

FACTORY = "quantized"


def quantize(
    model: nn.Module,
    config: QuantConfig | dict | None = None,
    data: Dataset | torch.Tensor | list[torch.Tensor] | list[dict] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Quantize ``model`` as ``config`` says and return the fake-quantized PyTorch model.

    The input model is left unchanged. The result evaluates like the int8 model will run;
    :func:`slimkit.quant.export_int8` writes the ONNX file that ONNX Runtime runs on integer
    kernels, and :func:`slimkit.quant.save_packed` the packed weight-only file.

    Args:
        model: A float model (zoo, checkpoint, or any ``nn.Module`` for dynamic/weight-only).
        config: A :class:`QuantConfig`, a dict of its fields, or None for the defaults.
        data: Calibration data for ``static``/``qat`` and for ``weight_rounding="gptq"`` (a
            Dataset, whose training split is used, a tensor of inputs, or a list of batches;
            GPTQ also takes a transformer's keyword batches); ``qat`` and ``accuracy_budget``
            need a Dataset.
        **overrides: Fields of the config, e.g. ``mode="dynamic"``.

    Example:
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> data = load_data("digits")
        >>> model = build_model("cnn-small", data.input_shape, data.num_classes)
        >>> q = quantize(model, {"mode": "static", "calibration_batches": 2}, data)
        >>> quant_info(q)["config"]["mode"]
        'static'
    """
    cfg = as_config(config, **overrides)
    if cfg.quantize_attention:  # the QDQ path has no attention rewrite: say so, do not ignore it
        raise SlimkitError(
            "quantize: quantize_attention applies to sentence embedders "
            "(slimkit.quant.transformer.quantize_embedder); leave it off here"
        )
    check_finite(model)
    if cfg.mode in ("static", "qat"):
        return _static(model, cfg, data)
    from slimkit.quant.dynamic import prepare_dynamic
    from slimkit.quant.weight_only import prepare_weight_only

    prepare = prepare_dynamic if cfg.mode == "dynamic" else prepare_weight_only
    quantized = prepare(copy.deepcopy(model).eval(), cfg)
    if cfg.weight_rounding == "gptq":
        from slimkit.quant.weight_only import gptq_round

        gptq_round(quantized, _gptq_batches(data, cfg))
    _remember(quantized, model, cfg, [])
    return quantized


def check_finite(model: nn.Module) -> None:
    """Refuse a model with NaN or infinite weights, naming the first such tensor.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> check_finite(net)  # fine: returns None
        >>> with torch.no_grad():
        ...     net.bias.fill_(float("nan"))
        Parameter containing:
        tensor([nan], requires_grad=True)
        >>> check_finite(net)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        slimkit.errors.SlimkitError: weight 'bias' holds NaN or infinite values; ...
    """
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise SlimkitError(
                f"weight {name!r} holds NaN or infinite values; quantization needs a finite "
                "model (retrain it or restore a good checkpoint)"
            )


def weight_scheme(cfg: QuantConfig) -> QScheme:
    """The weight grid: signed, symmetric, per output channel unless told otherwise.

    With ``reduce_range``, static weights use 7 bits: on x86 CPUs without VNNI, ONNX Runtime's
    int8 kernels add pairs of u8 x s8 products in saturating 16-bit registers (vpmaddubsw),
    which 7-bit weights cannot overflow (ONNX Runtime's quantization guide, "reduce_range").
    Dynamic Linears keep 8 bits with pair-safe scales instead (:func:`pair_safe`).

    Example:
        >>> weight_scheme(QuantConfig(mode="static", reduce_range=False))
        QScheme(bits=8, symmetric=True, signed=True, axis=0)
        >>> weight_scheme(QuantConfig(mode="static", reduce_range=True)).bits
        7
    """
    bits = cfg.weight_bits
    if bits == 8 and cfg.mode in ("static", "qat") and reduce_range_applies(cfg):
        bits = 7
    return QScheme(bits=bits, symmetric=True, signed=True, axis=0 if cfg.per_channel else None)


def pair_safe(cfg: QuantConfig) -> bool:
    """Whether dynamic per-tensor int8 weights need pair-safe scales
    (:func:`slimkit.quant.observers.pair_safe_scale`): on CPUs that need ``reduce_range``.
    They cannot saturate the 16-bit pair sums whatever the 8-bit activations. (Per token, the
    activations give up the bit instead; see :func:`activation_scheme`.)

    Example:
        >>> pair_safe(QuantConfig(mode="dynamic", reduce_range=True))
        True
        >>> pair_safe(QuantConfig(mode="static", reduce_range=True))  # static uses 7-bit weights
        False
    """
    return (
        cfg.mode == "dynamic" and cfg.granularity == "tensor" and cfg.weight_bits == 8
        and reduce_range_applies(cfg)
    )  # fmt: skip


def activation_scheme(cfg: QuantConfig) -> QScheme:
    """The activation grid: unsigned, affine (ONNX Runtime's u8 activations).

    Per token, ``reduce_range`` takes its bit from the activations instead of the weights:
    every row then has values at both ends of its grid, so u8 values up to 255 would often
    saturate the u8 x s8 pair sums; values up to 127 never can (2 * 127 * 127 < 2**15), whatever
    the 8-bit weights.

    Example:
        >>> activation_scheme(QuantConfig()).range
        (0, 255)
        >>> token = QuantConfig(mode="dynamic", granularity="token", reduce_range=True)
        >>> activation_scheme(token).bits  # per token, the activations give up the bit
        7
    """
    bits = cfg.activation_bits
    if bits == 8 and cfg.granularity == "token" and reduce_range_applies(cfg):
        bits = 7
    return QScheme(bits=bits, symmetric=False, signed=False)


def reduce_range_applies(cfg: QuantConfig) -> bool:
    """Whether ``cfg.reduce_range`` is in effect here (``"auto"``: on CPUs that need it).

    Example:
        >>> reduce_range_applies(QuantConfig(reduce_range=True))
        True
    """
    if cfg.reduce_range == "auto":
        return cpu_needs_reduce_range()
    return bool(cfg.reduce_range)


@functools.cache
def cpu_needs_reduce_range() -> bool:
    """True on x86 CPUs without VNNI/AMX, where 8-bit weights can saturate int8 kernels.

    Example:
        >>> isinstance(cpu_needs_reduce_range(), bool)
        True
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown x86: the safe choice
    return not any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def calibration_batches(
    data: Dataset | torch.Tensor | list[torch.Tensor] | None, cfg: QuantConfig
) -> list[torch.Tensor]:
    """The first ``calibration_batches`` batches of real inputs, validated.

    Example:
        >>> batches = calibration_batches(torch.randn(10, 4), QuantConfig(batch_size=4))
        >>> [len(b) for b in batches]
        [4, 4, 2]
    """
    if data is None:
        raise SlimkitError(
            f"mode {cfg.mode!r} needs calibration data: pass a Dataset or input batches"
        )
    if isinstance(data, Dataset):
        x = data.train.x
        if not isinstance(x, torch.Tensor):
            raise SlimkitError(
                "static quantization calibrates on tensors; this data set holds text "
                "(use mode 'dynamic' for text models)"
            )
        data = x
    if isinstance(data, torch.Tensor):
        data = [data[i : i + cfg.batch_size] for i in range(0, len(data), cfg.batch_size)]
    batches = [b for b in data if isinstance(b, torch.Tensor) and len(b) > 0]
    batches = batches[: cfg.calibration_batches]
    if not batches:
        raise SlimkitError("calibration data is empty; give at least one batch of real inputs")
    return [b.float() for b in batches]


def _static(model: nn.Module, cfg: QuantConfig, data: Any) -> nn.Module:
    batches = calibration_batches(data, cfg)
    gm, plan = prepare_static(
        model,
        weight_scheme(cfg),
        activation_scheme(cfg),
        observer=cfg.observer,
        weight_observer=cfg.weight_observer,
        skip=cfg.skip,
        quantize_output=cfg.quantize_output,
        learn=cfg.mode == "qat" and cfg.lsq,
        options={"percentile": cfg.percentile},
    )
    calibrate(gm, batches)
    float_layers: list[str] = []
    if cfg.mode == "qat":
        from slimkit.quant.qat import train_qat

        train_qat(gm, _dataset(data, "qat"), cfg)
    if cfg.accuracy_budget is not None:
        from slimkit.quant.mixed import keep_sensitive_float

        float_layers = keep_sensitive_float(gm, plan, model, _dataset(data, "accuracy_budget"), cfg)
    _remember(gm, model, cfg, float_layers, plan.folded)
    return gm


def _gptq_batches(data: Any, cfg: QuantConfig) -> list[Any]:
    """Calibration batches for GPTQ: input tensors, or a transformer's keyword batches."""
    if data is None:
        raise SlimkitError(
            "weight_rounding 'gptq' needs calibration data: pass a Dataset or input batches"
        )
    if isinstance(data, list) and data and all(isinstance(b, Mapping) for b in data):
        return data[: cfg.calibration_batches]
    return calibration_batches(data, cfg)


def _dataset(data: Any, what: str) -> Dataset:
    if not isinstance(data, Dataset):
        raise SlimkitError(f"{what} needs a Dataset (training and validation splits)")
    return data


def _remember(
    quantized: nn.Module,
    base: nn.Module,
    cfg: QuantConfig,
    float_layers: list[str],
    folded: list | None = None,
) -> None:
    """Record what was done on the model, and a spec that rebuilds it from a checkpoint."""
    meta = {"config": cfg.model_dump(), "float_layers": float_layers, "folded": folded or []}
    setattr(quantized, META, meta)
    spec = getattr(base, SPEC_ATTR, None)
    if spec is None:
        return  # a user's own model: exportable, but not a slimkit checkpoint
    from slimkit.models import spec_of

    base_spec = spec_of(base)
    setattr(
        quantized,
        SPEC_ATTR,
        ModelSpec(
            name=FACTORY,
            input_shape=base_spec.input_shape,
            num_classes=base_spec.num_classes,
            kwargs={
                "base": base_spec.model_dump(),
                "config": cfg.model_dump(),
                "float_layers": float_layers,
            },
        ),
    )


@BUILDERS.register(FACTORY)
def quantized_model(
    input_shape: list[int],
    num_classes: int,
    base: dict[str, Any],
    config: dict[str, Any],
    float_layers: list[str] | None = None,
) -> nn.Module:
    """Rebuild the structure of a quantized model (quantizers included) for loading weights.

    Checkpoints of quantized models name this builder (registered in
    :data:`slimkit.models.registry.BUILDERS`, not the zoo); :func:`slimkit.models.load_checkpoint`
    calls it, and the checkpoint's tensors fill in weights, scales and zero points.

    Example:
        >>> from slimkit.models import build_model, spec_of
        >>> spec = spec_of(quantize(build_model("mlp", (1, 8, 8), 10), mode="dynamic"))
        >>> rebuilt = quantized_model(spec.input_shape, spec.num_classes, **spec.kwargs)
        >>> rebuilt(torch.zeros(1, 1, 8, 8)).shape
        torch.Size([1, 10])
    """
    del input_shape, num_classes  # recorded in ``base``
    cfg = QuantConfig(**config)
    model = model_from_spec(ModelSpec(**base))
    if cfg.mode in ("static", "qat"):
        gm, _ = prepare_static(
            model,
            weight_scheme(cfg),
            activation_scheme(cfg),
            skip=cfg.skip,
            quantize_output=cfg.quantize_output,
            learn=cfg.mode == "qat" and cfg.lsq,
        )
        for q in gm.modules():
            if isinstance(q, ActFakeQuant):
                q.mode, q.observer = "quant", None
        if float_layers:
            from slimkit.quant.mixed import set_float

            set_float(gm, float_layers)
        quantized = gm
    else:  # GPTQ's codes and grid come from the checkpoint's tensors, not a new calibration
        quantized = quantize(model, cfg.model_copy(update={"weight_rounding": "nearest"}))
    _remember(quantized, model, cfg, float_layers or [])
    return quantized


def quantizers(model: nn.Module) -> list[FakeQuant]:
    """Every fake-quantizer in ``model`` (weights and activations).

    Example:
        >>> from slimkit.models import build_model
        >>> x = torch.randn(16, 1, 8, 8)
        >>> q = quantize(build_model("mlp", (1, 8, 8), 10), mode="static", data=x)
        >>> len(quantizers(q)) > 0, all(f.mode == "quant" for f in quantizers(q))
        (True, True)
    """
    return [m for m in model.modules() if isinstance(m, FakeQuant)]


def quant_info(model: nn.Module) -> dict[str, Any] | None:
    """What :func:`quantize` did to ``model`` (mode, settings, float layers), or None.

    Example:
        >>> quant_info(nn.Linear(2, 2)) is None  # never quantized
        True
        >>> quant_info(quantize(nn.Sequential(nn.Linear(4, 2)), mode="dynamic"))["float_layers"]
        []
    """
    return getattr(model, META, None)
