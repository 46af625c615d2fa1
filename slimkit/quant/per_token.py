"""Per-token dynamic quantization in ONNX: every row of an activation gets its own int8 range.

In a transformer a few tokens ([CLS], padding) carry activations several times larger than the
others (4 to 7 times the typical token's range on all-MiniLM-L6-v2), so one range per tensor
(ONNX Runtime's DynamicQuantizeMatMul) leaves the ordinary tokens a few levels each. Per-token
ranges are the remedy of LLM.int8() (Dettmers et al. 2022) and ZeroQuant (Yao et al. 2022).
ONNX Runtime has no per-row kernel, so the rewrite spells it out with standard ops around its
integer GEMM (``MatMulIntegerToFloat``)::

    hi, lo = ReduceMax(x), ReduceMin(x)          # per row, widened to include 0
    s = (hi - lo) / qmax;  z = round(-lo / s)    # per-row scale and zero point
    q = QuantizeLinear(x, s, z)                  # blocked: one block per row (opset 21)
    y = s * MatMulIntegerToFloat([q, z...], [W; C], w_scale) + b

The GEMM's zero point can only be a scalar, so each row's ``z`` is subtracted inside the GEMM
instead: ``R`` columns holding ``z`` are appended to ``q`` and ``R`` rows ``C`` (summing to minus
the column sums of the int8 weights, each entry within int8) to ``W``, which adds
``-z * sum_k W[k, n]``: exactly the zero-point correction, in integer arithmetic, at the cost of
``R`` extra inner-product terms (9 to 56 on MiniLM, against K = 384 or 1536). Activations use at
most 7 bits where the CPU needs ``reduce_range`` (see
:func:`slimkit.quant.api.activation_scheme`), so u8 x s8 pair sums never saturate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.errors import SlimkitError
from slimkit.quant.dynamic import MS_DOMAIN

OPSET = 21  # blocked QuantizeLinear
INT8_MAX = 127


def correction_rows(q: np.ndarray) -> np.ndarray:
    """Int8 rows that sum, per column, to minus the column sums of int8 weights ``q`` [K, N].

    Example:
        >>> q = np.array([[100, -3], [120, 1]], dtype=np.int8)
        >>> rows = correction_rows(q)
        >>> rows.shape, (rows.astype(int).sum(0) + q.astype(int).sum(0)).tolist()
        ((2, 2), [0, 0])
    """
    remaining = -q.astype(np.int64).sum(0)
    count = int(np.ceil(np.abs(remaining).max() / INT8_MAX)) if remaining.size else 0
    rows = np.zeros((count, q.shape[1]), dtype=np.int8)
    for r in range(count):
        step = np.clip(remaining, -INT8_MAX, INT8_MAX)
        rows[r] = step
        remaining = remaining - step
    return rows


class PerTokenMatMuls:
    """Builds the per-token nodes for MatMuls with constant weights, quantizing each input once
    however many MatMuls read it (query, key and value share theirs).

    ``plans`` maps a key (one per MatMul) to (input name, int8 weight [K, N], per-column
    scale [N]).

    Example:
        >>> from onnx import helper
        >>> graph = helper.make_graph([], "g", [], [])
        >>> q = np.array([[100, -3], [120, 1]], dtype=np.int8)
        >>> builder = PerTokenMatMuls(graph, {"0": ("x", q, np.array([0.01, 0.02], np.float32))}, 8)
        >>> ops = [n.op_type for n in builder.nodes("0", "w", "", "y")]
        >>> ops[:4], ops[-2:]  # the row's range, then the int8 GEMM and its zero-point fix
        (['ReduceMax', 'ReduceMin', 'Max', 'Min'], ['MatMulIntegerToFloat', 'Mul'])
    """

    def __init__(self, graph: Any, plans: dict[str, tuple[str, np.ndarray, np.ndarray]],
                 bits: int) -> None:  # fmt: skip
        self.graph, self.plans, self.top = graph, plans, 2**bits - 1
        self.rows = {key: correction_rows(q) for key, (_, q, _) in plans.items()}
        self.extra: dict[str, int] = {}  # input -> correction columns (max over its readers)
        for key, (x, _, _) in plans.items():
            self.extra[x] = max(self.extra.get(x, 0), len(self.rows[key]))
        self.quantized: dict[str, tuple[str, str]] = {}
        self._constants()

    def _constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def _constants(self) -> None:
        self._constant("pt_axes", np.array([-1], np.int64))
        self._constant("pt_zero", np.array(0.0, np.float32))
        self._constant("pt_below_zero", np.array(-1e-12, np.float32))  # keeps every range > 0
        self._constant("pt_top", np.array(float(self.top), np.float32))
        self._constant("pt_one", np.array(1.0, np.float32))

    def nodes(self, key: str, name: str, bias: str, output: str) -> list[Any]:
        """The nodes that replace MatMul ``key`` (and its bias ``Add``, writing ``output``);
        ``name`` (unique) prefixes the new constants."""
        from onnx import helper

        x, q, scale = self.plans[key]
        made = [] if x in self.quantized else self._quantize_input(x, q.shape[0])
        xq, s = self.quantized[x]
        rows = self.rows[key]
        pad = self.extra[x] - len(rows)  # inputs shared by MatMuls needing fewer rows
        w = np.concatenate([q, rows, np.zeros((pad, q.shape[1]), np.int8)])
        base = name.replace("/", "_")
        wq = self._constant(f"{base}_w_int8", w)
        ws = self._constant(f"{base}_w_scale", scale.astype(np.float32))
        gemm, scaled = f"{base}_acc", f"{base}_scaled"
        made += [
            helper.make_node(
                "MatMulIntegerToFloat", [xq, wq, "pt_one", ws], [gemm], domain=MS_DOMAIN
            ),
            helper.make_node("Mul", [gemm, s], [scaled if bias else output]),
        ]
        if bias:
            made.append(helper.make_node("Add", [scaled, bias], [output]))
        return made

    def _quantize_input(self, x: str, k: int) -> list[Any]:
        from onnx import TensorProto, helper

        keys = ("hi0", "lo0", "hi", "lo", "range", "s", "zneg", "z0", "zf", "z", "q0", "zc", "q")
        n = {key: f"{x}_pt_{key}" for key in keys}
        extra = self.extra[x]
        made = [
            helper.make_node("ReduceMax", [x, "pt_axes"], [n["hi0"]], keepdims=1),
            helper.make_node("ReduceMin", [x, "pt_axes"], [n["lo0"]], keepdims=1),
            helper.make_node("Max", [n["hi0"], "pt_zero"], [n["hi"]]),
            helper.make_node("Min", [n["lo0"], "pt_below_zero"], [n["lo"]]),
            helper.make_node("Sub", [n["hi"], n["lo"]], [n["range"]]),
            helper.make_node("Div", [n["range"], "pt_top"], [n["s"]]),
            helper.make_node("Div", [n["lo"], n["s"]], [n["zneg"]]),
            helper.make_node("Neg", [n["zneg"]], [n["z0"]]),
            helper.make_node("Round", [n["z0"]], [n["zf"]]),
            helper.make_node("Cast", [n["zf"]], [n["z"]], to=TensorProto.UINT8),
            helper.make_node(
                "QuantizeLinear",
                [x, n["s"], n["z"]],
                [n["q0"] if extra else n["q"]],
                axis=-1,
                block_size=k,
            ),
        ]
        if extra:  # the zero-point columns: z repeated R times, then appended to q
            shape = self._constant(f"{x}_pt_zshape", np.array([1, extra], np.int64))
            made += [
                helper.make_node("Expand", [n["z"], shape], [n["zc"]]),
                helper.make_node("Concat", [n["q0"], n["zc"]], [n["q"]], axis=-1),
            ]
        self.quantized[x] = (n["q"], n["s"])
        return made


def use_opset(model: Any) -> None:
    """Raise the default-domain opset to 21 (blocked QuantizeLinear).

    Graphs from the dynamo exporter are opset 18+; from 18 to 21 the ops such graphs use gained
    types (float8, int4) but kept their meaning. Older graphs (axes as attributes) are refused.

    Example:
        >>> from onnx import helper
        >>> model = helper.make_model(helper.make_graph([], "g", [], []),
        ...                           opset_imports=[helper.make_opsetid("", 18)])
        >>> use_opset(model); model.opset_import[0].version
        21
    """
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < OPSET:
            if opset.version < 18:
                raise SlimkitError(
                    f"per-token quantization needs an opset-18+ ONNX graph, got {opset.version}"
                )
            opset.version = OPSET
