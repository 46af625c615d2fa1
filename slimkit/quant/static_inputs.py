"""Static activation ranges for the Linears of a transformer: SmoothQuant's O3 setting.

Dynamic quantization finds each activation's range at run time: every ``DynamicQuantizeMatMul``
reads its float input twice, once for the min and max and once to quantize it. After SmoothQuant
and with the FFN's outlier neurons in float (:mod:`slimkit.quant.outliers`), the per-tensor
ranges of a BERT-style encoder barely move from batch to batch, so they can be calibrated once
(SmoothQuant, Xiao et al. 2023, table 3: "O3", static per-tensor activations, its fastest
setting). Each Linear's input then gets a :class:`~slimkit.quant.fake.ActFakeQuant` whose range
an observer (``QuantConfig.observer``) chooses on the calibration batches, and in ONNX each
MatMul becomes ``QuantizeLinear`` with that constant scale and zero point, then ONNX Runtime's
integer GEMM ``MatMulIntegerToFloat``: the same u8 x s8 arithmetic as the dynamic rewrite,
without the pass that finds the range. Linears reading one input with one range (a layer's
query, key and value) share one ``QuantizeLinear``.

On all-MiniLM-L6-v2 the calibrated ranges of 64 training sentences gave the dev set's
embeddings the same cosine to float as the run-time ranges. The range pass is about 1.5% of a
batch's time in ONNX Runtime (measured one GEMM at a time), less than whole passes over the dev
set vary from run to run on a shared 2-core machine (BENCHMARKS.md, minilm-int8).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.quant.attention import OutputRange, ScoreRewriter
from slimkit.quant.config import QuantConfig
from slimkit.quant.dynamic import MS_DOMAIN, LinearRewriter, graph_consumers, module_scope
from slimkit.quant.fake import ActFakeQuant

Range = tuple[float, int]  # (scale, uint8 zero point)


def calibrate_inputs(model: nn.Module, cfg: QuantConfig, run: Callable[[nn.Module], None]) -> int:
    """Give every Linear with a run-time input quantizer (:func:`prepare_dynamic`) a static one
    instead, its range chosen by ``cfg.observer`` while ``run(model)`` feeds calibration data;
    returns how many. Layers set to float (quantizer mode ``"off"``) stay float.

    Example:
        >>> from slimkit.quant.dynamic import prepare_dynamic
        >>> cfg = QuantConfig(mode="static")
        >>> net = prepare_dynamic(nn.Sequential(nn.Linear(4, 3)), cfg)
        >>> calibrate_inputs(net, cfg, lambda m: m(torch.rand(8, 4)))
        1
        >>> scale, zero = input_ranges(net)["0"]
        >>> zero, 0.0 < scale < 1 / 255  # inputs in [0, 1): zero at code 0, 255 steps
        (0, True)
    """
    from slimkit.quant.api import activation_scheme

    layers = [m for m in model.modules() if hasattr(m, "input_quant")]
    if not layers:
        raise SlimkitError("static input ranges: the model has no quantized Linear")
    for layer in layers:
        mode = layer.input_quant.mode
        layer.input_quant = ActFakeQuant(activation_scheme(cfg), cfg.observer)
        layer.input_quant.mode = "observe" if mode == "quant" else "off"
    with torch.no_grad():
        run(model)
    for layer in layers:
        if layer.input_quant.mode == "observe":
            layer.input_quant.freeze()
    return len(layers)


def input_ranges(model: nn.Module) -> dict[str, Range]:
    """(scale, zero point) of each Linear's static input quantizer, by module name.

    Example:
        >>> input_ranges(nn.Linear(2, 2))
        {}
    """
    return {
        name: (float(m.input_quant.scale), int(m.input_quant.zero_point))
        for name, m in model.named_modules()
        if isinstance(getattr(m, "input_quant", None), ActFakeQuant)
        and m.input_quant.mode == "quant"
    }


def quantize_onnx_static_inputs(
    src: str | Path,
    dst: str | Path,
    cfg: QuantConfig,
    ranges: dict[str, Range],
    skip: list[str] | None = None,
    scores: dict[str, OutputRange] | None = None,
) -> dict[str, Any]:
    """Rewrite each MatMul/Gemm with a constant weight as ``QuantizeLinear`` (the input's range
    from ``ranges``, by the PyTorch module the node came from) and ``MatMulIntegerToFloat``
    (int8 weights as :func:`~slimkit.quant.dynamic.quantize_onnx_dynamic` writes them); large
    lookup tables as int8 rows. ``skip`` patterns stay float. ``scores`` (the query and key
    Linears' output ranges, :func:`~slimkit.quant.attention.output_ranges`) puts the attention
    scores on the integer GEMM too (:class:`~slimkit.quant.attention.ScoreRewriter`). Returns
    counts of what was done.

    Example:
        >>> import tempfile
        >>> from slimkit.measure import export_onnx
        >>> tmp = tempfile.mkdtemp()
        >>> f = export_onnx(nn.Sequential(nn.Linear(8, 4)), tmp + "/f.onnx", (8,))
        >>> cfg = QuantConfig(mode="static")
        >>> quantize_onnx_static_inputs(f, tmp + "/q.onnx", cfg, {"0": (0.01, 128)})["quantized"]
        1
    """
    skip = (skip or []) + cfg.skip
    return StaticInputRewriter.rewrite_file(src, dst, cfg, skip, ranges, scores or {})


class StaticInputRewriter(LinearRewriter):
    """:class:`~slimkit.quant.dynamic.LinearRewriter` whose Linears quantize their input with
    a calibrated range: one ``QuantizeLinear`` per input and range, ``MatMulIntegerToFloat``
    per Linear; with ``scores``, the attention scores first
    (see :func:`quantize_onnx_static_inputs`)."""

    def __init__(
        self,
        model: Any,
        cfg: QuantConfig,
        skip: list[str],
        ranges: dict[str, Range],
        scores: dict[str, OutputRange] | None = None,
    ) -> None:
        super().__init__(model, cfg, skip)
        self.ranges, self.scores = ranges, scores or {}
        self.score_products = 0

    def run(self) -> None:
        if self.scores:
            outputs = self._linear_outputs()
            self.score_products = ScoreRewriter(self.graph, self.scores, outputs).run()
        super().run()

    def counts(self) -> dict[str, Any]:
        """What the rewrite did, and how many attention score products went int8."""
        return {**super().counts(), "attention_scores": self.score_products}

    def _linear_outputs(self) -> dict[str, str]:
        """Module name -> output tensor (after the bias ``Add``) of each Linear in the graph."""
        consumers = graph_consumers(self.graph)
        outputs = {}
        for node in self.graph.node:
            weight, scope = self._weight(node), module_scope(node)
            if weight is not None and scope is not None:
                width = self.inits[weight].dims[1]
                outputs[scope] = self._bias(node, consumers, width)[1]
        return outputs

    def replacements(self, plans: dict[int, tuple[Any, np.ndarray, str, str]]) -> dict[int, list]:
        from onnx import helper

        quantized: dict[tuple[str, Range], list[str]] = {}  # (input, range) -> its u8 names
        new_nodes: dict[int, list] = {}
        for index, (node, w, bias, output) in plans.items():
            source, value = node.input[0], self._range(node)
            nodes = new_nodes.setdefault(index, [])
            if (source, value) not in quantized:
                quantized[source, value] = names = self._quantizer(source, value, len(quantized))
                nodes.append(helper.make_node(
                    "QuantizeLinear", [source, names[1], names[2]], [names[0]], name=names[0]
                ))  # fmt: skip
            q, scale, zero = quantized[source, value]
            w_q, w_scale, w_zero = self._int8_weight(node, w)
            nodes.append(helper.make_node(
                "MatMulIntegerToFloat", [q, w_q, scale, w_scale, zero, w_zero, bias],
                [output], name=self._name(node), domain=MS_DOMAIN,
            ))  # fmt: skip
        return new_nodes

    def _range(self, node: Any) -> Range:
        scope = module_scope(node)
        if scope not in self.ranges:
            raise SlimkitError(
                f"{scope or node.name}: no calibrated input range for this Linear; calibrate "
                "the model that was exported (calibrate_inputs) or skip the layer"
            )
        return self.ranges[scope]

    def _quantizer(self, source: str, value: Range, count: int) -> list[str]:
        """Names of the u8 input, its scale and zero point; the constants are written here."""
        from onnx import numpy_helper

        base = f"{source.replace('/', '_')}_static{count}"
        names = [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"]
        scale, zero = value
        self.graph.initializer.extend([
            numpy_helper.from_array(np.array(scale, dtype=np.float32), names[1]),
            numpy_helper.from_array(np.array(zero, dtype=np.uint8), names[2]),
        ])  # fmt: skip
        return names
