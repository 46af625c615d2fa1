"""Quantization: static and dynamic int8, weight-only int8/int4, QAT and mixed precision, with
deployment on ONNX Runtime's integer kernels.

One entry call, :func:`quantize`, returns a fake-quantized PyTorch model that evaluates as the
int8 model will run; :func:`export_int8` writes the ONNX file (QDQ for static/QAT, run-time
activation quantization for dynamic, ``MatMulNBits`` for weight-only) and checks parity and
integer kernels; weight-only models are also stored packed with :func:`save_packed` and loaded
with :func:`load_packed`.

Example:
    >>> from slimkit.data import load_data
    >>> from slimkit.models import build_model
    >>> data = load_data("digits")
    >>> model = build_model("cnn-small", data.input_shape, data.num_classes)
    >>> q = quantize(model, {"mode": "static", "observer": "percentile"}, data)
    >>> q._slimkit_quant["config"]["mode"]
    'static'
"""

from slimkit.quant.api import check_finite, quant_info, quantize, quantized_model
from slimkit.quant.config import QuantConfig
from slimkit.quant.export import export_int8
from slimkit.quant.fold import fold_batchnorm, fold_bn_into
from slimkit.quant.observers import (
    OBSERVERS,
    EntropyObserver,
    MinMaxObserver,
    MovingAverageObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    QScheme,
    fake_quant_values,
    make_observer,
    qparams_from_range,
)
from slimkit.quant.onnx_nbits import export_weight_only
from slimkit.quant.onnx_qdq import check_parity, export_qdq, integer_report, runtime_ops
from slimkit.quant.smooth import SmoothGroup, bert_groups, smooth
from slimkit.quant.weight_only import load_packed, pack_int4, save_packed, unpack_int4

__all__ = [
    "OBSERVERS",
    "EntropyObserver",
    "MSEObserver",
    "MinMaxObserver",
    "MovingAverageObserver",
    "Observer",
    "PercentileObserver",
    "QScheme",
    "QuantConfig",
    "SmoothGroup",
    "bert_groups",
    "check_finite",
    "check_parity",
    "export_int8",
    "export_qdq",
    "export_weight_only",
    "fake_quant_values",
    "fold_batchnorm",
    "fold_bn_into",
    "integer_report",
    "load_packed",
    "make_observer",
    "pack_int4",
    "qparams_from_range",
    "quant_info",
    "quantize",
    "quantized_model",
    "runtime_ops",
    "save_packed",
    "smooth",
    "unpack_int4",
]
