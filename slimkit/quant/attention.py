"""The attention scores of a BERT-style encoder in int8: the query-key product on integer kernels.

SmoothQuant's O3 setting (Xiao et al. 2023, table 3) quantizes the attention's batched matrix
multiplications too. Here only the query-key product is: the query (u8, affine) and the key
(s8, symmetric) get calibrated per-tensor ranges on their Linear's output, and in ONNX a
``QuantizeLinear`` follows each of those Linears, so the head split's ``Reshape`` and
``Transpose`` move one byte per value instead of four, and ``MatMulIntegerToFloat`` computes the
scores with the 1/sqrt(d) factor folded into its scale. The probability-value product stays
float: on all-MiniLM-L6-v2 quantizing the softmax output cost 0.0003 of mean cosine to the
float embeddings and ran slower (BENCHMARKS.md, minilm-int8).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.quant.config import QuantConfig
from slimkit.quant.dynamic import MS_DOMAIN, graph_consumers
from slimkit.quant.fake import ActFakeQuant
from slimkit.quant.observers import QScheme

QUERY = QScheme(bits=8, symmetric=False, signed=False)  # u8: the GEMM's first operand
OutputRange = tuple[float, int, bool]  # (scale, zero point, signed)


def score_linears(model: nn.Module) -> list[str]:
    """The query and key Linears of every BERT-style self-attention in ``model``.

    Example:
        >>> net = nn.Module()
        >>> net.attention = nn.Module()
        >>> net.attention.query, net.attention.key = nn.Linear(4, 4), nn.Linear(4, 4)
        >>> score_linears(net)
        ['attention.query', 'attention.key']
    """
    names = []
    for name, module in model.named_modules():
        query, key = getattr(module, "query", None), getattr(module, "key", None)
        if isinstance(query, nn.Linear) and isinstance(key, nn.Linear):
            prefix = f"{name}." if name else ""
            names += [f"{prefix}query", f"{prefix}key"]
    return names


def key_scheme(cfg: QuantConfig) -> QScheme:
    """The key's grid: s8, symmetric, the GEMM's second operand (ONNX Runtime's u8 x s8). On
    CPUs that need ``reduce_range`` it takes 7 bits, as static weights do: the kernel adds pairs
    of u8 x s8 products in saturating 16-bit registers, which 255 x 63 x 2 cannot overflow.
    (Keys beyond the calibrated range reach past 63 in ONNX Runtime's ``QuantizeLinear``,
    which clamps to the whole int8 range; min-max ranges leave few such keys.)

    Example:
        >>> key_scheme(QuantConfig(mode="static", reduce_range=True)).range
        (-64, 63)
    """
    from slimkit.quant.api import reduce_range_applies

    return QScheme(bits=7 if reduce_range_applies(cfg) else 8, symmetric=True, signed=True)


def _quant_output(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return module.output_quant(output)


def calibrate_scores(model: nn.Module, cfg: QuantConfig, run: Callable[[nn.Module], None]) -> int:
    """Give each query and key Linear an output quantizer (u8 for the query, s8 for the key:
    :func:`key_scheme`), its range chosen by ``cfg.observer`` while ``run(model)`` feeds
    calibration data; returns how many Linears. The model then computes its attention scores
    as the int8 ONNX graph does.

    Example:
        >>> net = nn.Module()
        >>> net.query, net.key = nn.Linear(4, 4), nn.Linear(4, 4)
        >>> net.forward = lambda x: net.query(x) @ net.key(x).T
        >>> calibrate_scores(net, QuantConfig(mode="static"), lambda m: m(torch.randn(8, 4)))
        2
        >>> sorted(output_ranges(net)), output_ranges(net)["key"][1:]
        (['key', 'query'], (0, True))
    """
    names = score_linears(model)
    if not names:
        raise SlimkitError("int8 attention scores: no BERT-style self-attention (query, key)")
    for name in names:
        layer = model.get_submodule(name)
        scheme = key_scheme(cfg) if name.endswith("key") else QUERY
        layer.output_quant = ActFakeQuant(scheme, cfg.observer)
        layer.register_forward_hook(_quant_output)
    with torch.no_grad():
        run(model)
    for name in names:
        model.get_submodule(name).output_quant.freeze()
    return len(names)


def output_ranges(model: nn.Module) -> dict[str, OutputRange]:
    """(scale, zero point, signed) of each calibrated output quantizer, by module name.

    Example:
        >>> output_ranges(nn.Linear(2, 2))
        {}
    """
    return {
        name: (float(m.output_quant.scale), int(m.output_quant.zero_point),
               m.output_quant.scheme.signed)
        for name, m in model.named_modules()
        if isinstance(getattr(m, "output_quant", None), ActFakeQuant)
    }  # fmt: skip


class ScoreRewriter:
    """Graph surgery on the float ONNX graph, before its Linears are rewritten: a
    ``QuantizeLinear`` after each calibrated query and key Linear, and the ``MatMul`` both reach
    through the head split (``Reshape``, ``Transpose``, scalar ``Mul``/``Div``), with any scalar
    ``Mul``/``Div`` on its output, becomes one ``MatMulIntegerToFloat``.

    ``outputs`` maps a Linear's module name to the tensor it produces (after its bias)."""

    def __init__(self, graph: Any, ranges: dict[str, OutputRange], outputs: dict[str, str]) -> None:
        self.graph, self.ranges, self.outputs = graph, ranges, outputs
        self.inits = {i.name: i for i in graph.initializer}
        self.consumers = graph_consumers(graph)
        self.producers = {name: node for node in graph.node for name in node.output}
        self.types = {v.name: v for v in graph.value_info}
        self.dropped: set[int] = set()
        self.after: dict[int, Any] = {}  # id(node) -> QuantizeLinear to insert after it
        self.replaced: dict[int, Any] = {}

    def run(self) -> int:
        """Rewrite every attention whose query and key are calibrated; returns how many."""
        pairs = [n.removesuffix("query") for n in self.ranges if n.endswith("query")]
        for prefix in pairs:
            self._rewrite(prefix + "query", prefix + "key")
        nodes = []
        for node in self.graph.node:
            if id(node) in self.dropped:
                continue
            nodes.append(self.replaced.get(id(node), node))
            if id(node) in self.after:
                nodes.append(self.after[id(node)])
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        return len(pairs)

    def _rewrite(self, query: str, key: str) -> None:
        from onnx import TensorProto, helper

        for name in (query, key):
            if name not in self.ranges:
                raise SlimkitError(f"{name}: no calibrated output range (calibrate_scores)")
            if name not in self.outputs:
                raise SlimkitError(f"{name}: not found in the ONNX graph; cannot quantize scores")
        (q_end, q_walk, q_factor), (k_end, k_walk, k_factor) = (
            self._walk(self.outputs[query]), self._walk(self.outputs[key])
        )  # fmt: skip
        matmul = q_end
        if matmul is not k_end or list(matmul.input) != [q_walk[-1], k_walk[-1]]:
            raise SlimkitError(
                f"{query}: the query-key product is not a plain MatMul of the two heads' "
                "tensors; quantize this model's attention scores in float (quantize_attention "
                "off)"
            )
        factor, output = q_factor * k_factor, matmul.output[0]
        scale_node = self._scalar_op(output)
        if scale_node is not None:
            factor *= self._scalar_factor(scale_node)
            output = scale_node.output[0]
            self.dropped.add(id(scale_node))
        operands = []
        for name, walk in ((query, q_walk), (key, k_walk)):
            scale, zero, signed = self.ranges[name]
            kind = TensorProto.INT8 if signed else TensorProto.UINT8
            q_name = f"{walk[0]}_scores_quantized"
            code = np.int8 if signed else np.uint8
            zero_name = self._constant(f"{q_name}_zero_point", np.array(zero, code))
            scale_name = self._constant(f"{q_name}_scale", np.array(scale, np.float32))
            self.after[id(self.producers[walk[0]])] = helper.make_node(
                "QuantizeLinear", [walk[0], scale_name, zero_name], [q_name], name=q_name
            )
            self._retarget(walk, q_name, kind)
            operands.append((walk[-1] if len(walk) > 1 else q_name, scale, zero_name))
        (a, a_scale, a_zero), (b, b_scale, b_zero) = operands
        self.replaced[id(matmul)] = helper.make_node(
            "MatMulIntegerToFloat",
            [a, b, self._constant(f"{output}_a_scale", np.array(a_scale * factor, np.float32)),
             self._constant(f"{output}_b_scale", np.array(b_scale, np.float32)), a_zero, b_zero],
            [output], name=f"{matmul.name or output}_int8", domain=MS_DOMAIN,
        )  # fmt: skip

    def _walk(self, tensor: str) -> tuple[Any, list[str], float]:
        """Follow ``tensor`` through the head split to the MatMul that reads it: (that MatMul,
        the tensors on the way, the product of the scalar factors passed)."""
        walk, factor = [tensor], 1.0
        while True:
            readers = self.consumers.get(walk[-1], [])
            if len(readers) != 1:
                raise SlimkitError(f"{tensor}: read by {len(readers)} nodes, not one head split")
            node = readers[0]
            if node.op_type == "MatMul":
                return node, walk, factor
            if node.op_type in ("Mul", "Div") and self._scalar_op(walk[-1]) is node:
                factor *= self._scalar_factor(node)
                self.dropped.add(id(node))
                # the next node reads the scaled tensor; it now reads the unscaled one
                walk_next = node.output[0]
                for reader in self.consumers.get(walk_next, []):
                    reader.input[list(reader.input).index(walk_next)] = walk[-1]
                self.consumers[walk[-1]] = self.consumers.get(walk_next, [])
                continue
            if node.op_type not in ("Reshape", "Transpose") or node.input[0] != walk[-1]:
                raise SlimkitError(f"{tensor}: {node.op_type} between the Linear and the scores")
            walk.append(node.output[0])

    def _scalar_op(self, tensor: str) -> Any | None:
        readers = self.consumers.get(tensor, [])
        if len(readers) != 1 or readers[0].op_type not in ("Mul", "Div"):
            return None
        node = readers[0]
        if node.input[0] != tensor or node.input[1] not in self.inits:
            return None
        return node if self._value(node.input[1]).size == 1 else None

    def _scalar_factor(self, node: Any) -> float:
        value = float(self._value(node.input[1]).reshape(()))
        return value if node.op_type == "Mul" else 1.0 / value

    def _value(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name])

    def _retarget(self, walk: list[str], quantized: str, kind: int) -> None:
        """Make the head split read the quantized tensor and carry its type."""
        if len(walk) == 1:  # the MatMul reads the Linear's output directly: it is replaced
            return
        first = self.consumers[walk[0]][0]
        first.input[0] = quantized
        for name in walk[1:]:
            if name in self.types:
                self.types[name].type.tensor_type.elem_type = kind

    def _constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name
