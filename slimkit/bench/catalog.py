"""Imports every benchmark module so the benchmark registry is complete (one line each)."""

import importlib

BENCHMARK_MODULES = (
    "slimkit.bench.prune_lenet",  # prune-lenet300, prune-lenet5
    "slimkit.bench.structured_resnet20",  # structured-resnet20
    "slimkit.bench.kd_mnist",  # kd-mnist
    "slimkit.bench.ptq_lenet5",  # ptq-lenet5
    "slimkit.bench.minilm_int8",  # minilm-int8
    "slimkit.bench.minilm_int4",  # minilm-int4
    "slimkit.bench.automl_sklearn",  # automl-sklearn
    "slimkit.bench.deep_compression",  # deep-compression-lenet300, deep-compression-lenet5
    "slimkit.bench.nas_fashion",  # nas-fashion
)

for _module in BENCHMARK_MODULES:
    importlib.import_module(_module)
