"""Settings of :func:`slimkit.quant.quantize` and of the ``quantize`` recipe stage."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slimkit.errors import SlimkitError
from slimkit.quant.observers import OBSERVERS

Mode = Literal["static", "dynamic", "weight-only", "qat"]
Granularity = Literal["tensor", "token"]
Rounding = Literal["nearest", "gptq"]


class QuantConfig(BaseModel):
    """How to quantize. Unknown keys are errors.

    Modes:
        ``static``: int8 weights and activations, activation ranges calibrated on
        ``calibration_batches`` batches of training data; exported as ONNX QDQ.
        ``dynamic``: int8 weights of Linear/MatMul layers, activations quantized at run time
        (no calibration data needed). ``granularity="tensor"`` gives each activation tensor one
        range (ONNX Runtime's DynamicQuantizeMatMul); ``"token"`` gives each row (token) its
        own, for transformers where a few tokens carry activations several times larger (for
        BERT-style sentence embedders, moving the FFN's outlier neurons to float,
        :mod:`slimkit.quant.outliers`, is faster).
        ``weight-only``: int8 or group-wise int4 weights, float compute; saved packed.
        ``weight_rounding="gptq"`` chooses the codes by GPTQ on ``calibration_batches``
        batches of data (:mod:`slimkit.quant.gptq`) instead of rounding each to nearest.
        ``qat``: ``static``, then ``qat_epochs`` of fine-tuning through the fake quantizers.

    Example:
        >>> QuantConfig(mode="static", observer="percentile").weight_bits
        8
        >>> QuantConfig(weight_bits=12)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for QuantConfig...
    """

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "static"
    weight_bits: int = Field(8, description="2..8; 4 with group_size for weight-only int4")
    activation_bits: int = Field(8, description="2..8; ONNX export needs 8")
    per_channel: bool = True
    observer: str = "minmax"
    weight_observer: str = "minmax"
    percentile: float = Field(99.99, gt=50, le=100)
    calibration_batches: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)
    group_size: Literal[32, 64, 128] | None = None
    weight_rounding: Rounding = Field("nearest", description="weight-only: nearest or gptq")
    reduce_range: bool | Literal["auto"] = "auto"
    skip: list[str] = Field(default_factory=list, description="layer names/patterns kept float")
    quantize_output: bool = True
    accuracy_budget: float | None = Field(None, ge=0, le=1)
    qat_epochs: int = Field(3, ge=0)
    qat_lr: float = Field(1e-4, gt=0)
    lsq: bool = False
    smooth_alpha: float | None = Field(None, ge=0, le=1)
    granularity: Granularity = Field("tensor", description="dynamic activation ranges")
    approximate_gelu: bool = Field(
        True, description="transformer path: tanh GELU where int8 reads the FFN's GELU output"
    )
    quantize_attention: bool = Field(
        False, description="transformer path, static mode: int8 query-key product (scores)"
    )
    min_top1_agreement: float = Field(0.99, ge=0, le=1)

    @field_validator("weight_bits", "activation_bits")
    @classmethod
    def _bits(cls, value: int) -> int:
        if not 2 <= value <= 8:
            raise ValueError(f"bit width must be between 2 and 8, got {value}")
        return value

    @field_validator("observer", "weight_observer")
    @classmethod
    def _observer(cls, value: str) -> str:
        if value not in OBSERVERS:
            raise ValueError(f"unknown observer {value!r}; choose one of {', '.join(OBSERVERS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> QuantConfig:
        if self.weight_observer == "entropy":
            raise ValueError("weight_observer 'entropy' is for activations; use minmax or mse")
        if self.group_size is not None and self.mode != "weight-only":
            raise ValueError("group_size applies to mode 'weight-only' only")
        if self.granularity == "token" and self.mode != "dynamic":
            raise ValueError("granularity 'token' applies to mode 'dynamic' only")
        if self.weight_rounding == "gptq" and self.mode != "weight-only":
            raise ValueError("weight_rounding 'gptq' applies to mode 'weight-only' only")
        if self.quantize_attention and self.mode != "static":
            raise ValueError("quantize_attention needs calibrated ranges: mode 'static' only")
        if self.mode == "weight-only" and self.weight_bits not in (4, 8):
            raise ValueError("weight-only quantization stores 8- or 4-bit weights")
        return self


def as_config(config: QuantConfig | dict | None, **overrides: object) -> QuantConfig:
    """A validated :class:`QuantConfig` from a config, a dict or keywords; errors name the field.

    Example:
        >>> as_config({"mode": "dynamic"}, weight_bits=8).mode
        'dynamic'
    """
    if isinstance(config, QuantConfig):
        values = {**config.model_dump(exclude_unset=True), **overrides}
    else:
        values = {**(config or {}), **overrides}
    try:
        return QuantConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "config"
        if err["type"] == "extra_forbidden":
            known = ", ".join(QuantConfig.model_fields)
            raise SlimkitError(f"quantize: unknown key {where!r}; known: {known}") from None
        message = err["msg"].removeprefix("Value error, ")
        raise SlimkitError(f"quantize: {where}: {message}") from None
