"""Dynamic quantization: int8 weights, activations quantized at run time from their own range.

Suited to Linear-heavy models and transformers, whose activation ranges vary from input to input
(no calibration data needed). In PyTorch each Linear gets an int8 per-channel weight
parametrization and a :class:`~slimkit.quant.fake.DynamicActFakeQuant` on its input; in ONNX each
MatMul/Gemm with a constant weight becomes ONNX Runtime's ``DynamicQuantizeMatMul`` (u8
activations quantized per call, s8 weights, the same scales as the PyTorch model). MatMuls that
read one input (a layer's query, key and value) quantize it once: ``DynamicQuantizeLinear`` and
a ``MatMulIntegerToFloat`` each, the same arithmetic.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from slimkit.errors import SlimkitError
from slimkit.io import atomic_path
from slimkit.quant.config import QuantConfig
from slimkit.quant.fake import DynamicActFakeQuant, WeightFakeQuant

MS_DOMAIN = "com.microsoft"
MIN_TABLE = 4096  # smaller lookup tables (position, token type) are not worth an int8 copy


def is_skipped(name: str, patterns: list[str]) -> bool:
    """Whether a layer name matches one of the ``skip`` patterns (shell-style wildcards).

    Example:
        >>> is_skipped("encoder.layer.0.output.dense", ["*.output.dense"])
        True
    """
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _quant_input(module: nn.Module, args: tuple) -> tuple:
    return (module.input_quant(args[0]), *args[1:])


def prepare_dynamic(model: nn.Module, cfg: QuantConfig) -> nn.Module:
    """Give every Linear (except ``cfg.skip``) int8 weights and run-time input quantization,
    and every large embedding table int8 rows.

    Convolutions stay float (ONNX Runtime quantizes MatMul/Gemm dynamically); a warning-free
    choice, since dynamic quantization targets Linear-heavy models.

    Example:
        >>> from slimkit.quant.config import QuantConfig
        >>> net = prepare_dynamic(nn.Sequential(nn.Linear(4, 3)), QuantConfig(mode="dynamic"))
        >>> net(torch.ones(2, 4)).shape
        torch.Size([2, 3])
    """
    count = 0
    for name, layer in list(model.named_modules()):
        if not isinstance(layer, nn.Linear) or is_skipped(name, cfg.skip):
            continue
        quant = linear_weight_quant(layer.weight.detach(), cfg)
        parametrize.register_parametrization(layer, "weight", quant)
        layer.input_quant = act_quant(cfg)
        layer.register_forward_pre_hook(_quant_input)
        count += 1
    if count == 0:
        raise SlimkitError("dynamic quantization found no Linear layer to quantize")
    for name, layer in model.named_modules():
        big = isinstance(layer, nn.Embedding) and layer.weight.numel() >= MIN_TABLE
        if big and not is_skipped(name, cfg.skip):  # as the ONNX rewrite stores them
            parametrize.register_parametrization(layer, "weight", RowInt8())
    return model


def act_quant(cfg: QuantConfig) -> DynamicActFakeQuant:
    """The run-time input quantizer ONNX Runtime will apply: 8-bit per tensor
    (DynamicQuantizeMatMul), or per token as :mod:`slimkit.quant.per_token` writes it.

    Example:
        >>> from slimkit.quant.config import QuantConfig
        >>> act_quant(QuantConfig(mode="dynamic")).per_token
        False
        >>> act_quant(QuantConfig(mode="dynamic", granularity="token")).per_token
        True
    """
    from slimkit.quant.api import activation_scheme

    if cfg.granularity == "token":
        return DynamicActFakeQuant(activation_scheme(cfg), per_token=True)
    return DynamicActFakeQuant()


def row_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values as floats, one scale per row): symmetric, as embedding tables are stored.

    Example:
        >>> q, scale = row_int8(torch.tensor([[1.0, -0.5], [0.0, 2.0]]))
        >>> q.tolist(), [round(s, 4) for s in scale.flatten().tolist()]
        ([[127.0, -64.0], [0.0, 127.0]], [0.0079, 0.0157])
    """
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.clamp(torch.round(w / scale), -127, 127), scale


class RowInt8(nn.Module):
    """Symmetric int8 with one scale per row: an embedding table as the ONNX rewrite stores it.

    Example:
        >>> RowInt8()(torch.tensor([[1.0, 0.3], [0.0, -2.0]])).tolist()
        [[1.0, 0.29921260476112366], [0.0, -2.0]]
    """

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q, scale = row_int8(w)
        return q * scale


def linear_weight_quant(weight: torch.Tensor, cfg: QuantConfig) -> WeightFakeQuant:
    """The int8 grid of a Linear weight (``[out, in]``) as the integer-GEMM rewrite deploys it
    (dynamic mode, and the static input ranges of :mod:`slimkit.quant.static_inputs`):
    ``cfg``'s weight scheme and observer, pair-safe scales where the CPU needs them
    (:func:`~slimkit.quant.api.pair_safe`). Clips ``weight`` to that grid, in place.

    The one place the grid is chosen: the PyTorch model, the ONNX rewrite and SmoothQuant's
    alpha search (:func:`weight_quantizer`) all use it, so they agree on every weight.

    Example:
        >>> from slimkit.quant.config import QuantConfig
        >>> cfg = QuantConfig(mode="dynamic", reduce_range=False)  # plain 8-bit, any CPU
        >>> quant = linear_weight_quant(torch.tensor([[1.0, -0.3]]), cfg)
        >>> (quant(torch.tensor([[1.0, -0.3]])) * 127).round().tolist()  # steps of 1/127
        [[127.0, -38.0]]
    """
    from slimkit.quant.api import pair_safe, weight_scheme

    # The rewrite's integer GEMMs are the same whether the activation ranges are found at run
    # time or calibrated (a sentence embedder's static mode), so is the grid: the dynamic one.
    kernel = cfg.model_copy(update={"mode": "dynamic"})
    quant = WeightFakeQuant(weight_scheme(kernel), cfg.weight_observer)
    quant.calibrate(weight, pair_safe=pair_safe(kernel))
    quant.observer = None
    return quant


def weight_quantizer(cfg: QuantConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """``weight -> weight`` quantized to its deployed int8 grid and back (the input is not
    changed): for scoring choices, such as SmoothQuant's alpha, on the weights that will run.

    Example:
        >>> from slimkit.quant.config import QuantConfig
        >>> fake = weight_quantizer(QuantConfig(mode="dynamic", weight_bits=2))
        >>> fake(torch.tensor([[1.0, 0.4, -0.8]])).tolist()  # levels -1, 0, 1
        [[1.0, 0.0, -1.0]]
    """
    return lambda weight: linear_weight_quant(weight.detach().clone(), cfg)(weight)


def weight_qparams(w: np.ndarray, cfg: QuantConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 weights, scales, zero points) of a constant ONNX weight ``[K, N]``, per output
    channel N: the grid of :func:`linear_weight_quant`.

    Example:
        >>> from slimkit.quant.config import QuantConfig
        >>> w = np.array([[1.0, 0.5], [-0.3, 0.25]], dtype=np.float32)  # [K, N]
        >>> q, scale, zero = weight_qparams(w, QuantConfig(mode="dynamic", reduce_range=False))
        >>> q.tolist(), (scale * 127).round(3).tolist(), zero.tolist()
        ([[127, 127], [-38, 64]], [1.0, 0.5], [0, 0])
    """
    tensor = torch.from_numpy(np.array(w, dtype=np.float32).T.copy())  # [N, K], as a Linear's
    quant = linear_weight_quant(tensor, cfg)
    qmin, qmax = quant.scheme.range
    scale, zero = quant.scale.reshape(-1, 1), quant.zero_point.reshape(-1, 1)
    q = torch.clamp(torch.round(tensor / scale) + zero, qmin, qmax)
    return q.T.to(torch.int8).numpy(), scale.reshape(-1).numpy(), zero.reshape(-1).numpy()


def quantize_onnx_dynamic(
    src: str | Path, dst: str | Path, cfg: QuantConfig, skip: list[str] | None = None
) -> dict[str, Any]:
    """Rewrite each MatMul/Gemm with a constant 2-D weight as ``DynamicQuantizeMatMul`` (or,
    where several read one input, one ``DynamicQuantizeLinear`` and ``MatMulIntegerToFloat``
    each), and each lookup (``Gather``) in a large constant table as an int8 lookup with
    per-row scales.

    ``skip`` patterns match node names or weight names; those nodes stay float. A following
    ``Add`` of a constant bias is folded into the op. Returns counts of what was done.

    Example:
        >>> import tempfile
        >>> from slimkit.measure import export_onnx
        >>> from slimkit.quant.config import QuantConfig
        >>> tmp = tempfile.mkdtemp()
        >>> f = export_onnx(nn.Sequential(nn.Linear(8, 4)), tmp + "/f.onnx", (8,))
        >>> quantize_onnx_dynamic(f, tmp + "/q.onnx", QuantConfig(mode="dynamic"))["quantized"]
        1
    """
    return LinearRewriter.rewrite_file(src, dst, cfg, (skip or []) + cfg.skip)


def save_rewritten(model: Any, dst: str | Path) -> None:
    """Save a rewritten ONNX graph: without the exporter's debug metadata, with ONNX Runtime's
    contrib domain imported, written whole or not at all."""
    import onnx

    from slimkit.quant.onnx_qdq import strip_debug_info

    strip_debug_info(model)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    with atomic_path(Path(dst)) as tmp:
        onnx.save(model, str(tmp))


class LinearRewriter:
    """Graph surgery for :func:`quantize_onnx_dynamic`: finds each MatMul/Gemm with a constant
    2-D weight (and the bias ``Add`` after it) and each lookup in a large constant table, and
    replaces them. Subclasses choose which weights to take (:meth:`takes`), what replaces the
    Linears (:meth:`replacements`) and the int8 rows of a table (:meth:`table_rows`)."""

    def __init__(self, model: Any, cfg: QuantConfig, skip: list[str]) -> None:
        self.model, self.cfg, self.skip = model, cfg, skip
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.quantized = 0
        self.kept: list[str] = []
        self.made: dict[bytes, list[str]] = {}  # weight digest -> its int8 initializers

    def run(self) -> None:
        from onnx import numpy_helper

        self._fold_weight_transposes()
        consumers = graph_consumers(self.graph)
        removed: set[int] = set()
        plans: dict[int, tuple[Any, np.ndarray, str, str]] = {}
        for index, node in enumerate(self.graph.node):
            weight = self._weight(node)
            if weight is None:
                continue
            scope = module_scope(node)
            if any(is_skipped(n, self.skip) for n in (node.name, node.input[1], scope) if n):
                self.kept.append(scope or node.name or node.input[1])
                continue
            w = numpy_helper.to_array(self.inits[node.input[1]])
            if node.op_type == "Gemm" and _attr(node, "transB", 0):
                w = w.T
            if not self.takes(w):
                self.kept.append(scope or node.name or node.input[1])
                continue
            bias, output, add = self._bias(node, consumers, w.shape[1])
            if add is not None:
                removed.add(id(add))
            plans[index] = (node, w, bias, output)
        new_nodes = self.replacements(plans)
        self.quantized = len(plans)
        nodes = []
        for index, node in enumerate(self.graph.node):
            if id(node) in removed:
                continue
            nodes.extend(self._gather(node) or new_nodes.get(index, [node]))
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        self._drop_unused()

    @classmethod
    def rewrite_file(cls, src: str | Path, dst: str | Path, *args: Any) -> dict[str, Any]:
        """Load ``src``, rewrite it with ``cls(model, *args)``, save it to ``dst`` and return
        counts of what was done: the body of each ``quantize_onnx_*`` entry point."""
        import onnx

        model = onnx.load(str(src))
        rewriter = cls(model, *args)
        rewriter.run()
        save_rewritten(model, dst)
        return rewriter.counts()

    def counts(self) -> dict[str, Any]:
        """What the rewrite did: Linears quantized, layers kept float."""
        return {"quantized": self.quantized, "kept_float": self.kept}

    def takes(self, w: np.ndarray) -> bool:
        """Whether to rewrite the MatMul of the constant weight ``w`` ``[K, N]``: all of them."""
        return True

    def replacements(self, plans: dict[int, tuple[Any, np.ndarray, str, str]]) -> dict[int, list]:
        """The nodes that replace each planned MatMul (graph index -> (node, weight ``[K, N]``,
        bias name or "", output name)), by the index of the node they replace."""
        if self.cfg.granularity == "token":
            return self._per_token(plans)
        return self._per_tensor(plans)

    def table_rows(self, table: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(int8 rows, one scale per row) of a constant lookup table, or None to keep it."""
        return row_int8(torch.from_numpy(table.copy()))

    def _fold_weight_transposes(self) -> None:
        """Replace ``Transpose`` of a 2-D constant with the transposed constant. The exporter
        can leave them where a Linear is called more than once (a shared layer), which would
        hide the weight from the MatMul."""
        from onnx import numpy_helper

        kept = []
        for node in self.graph.node:
            init = self.inits.get(node.input[0]) if node.op_type == "Transpose" else None
            if init is None or len(init.dims) != 2 or _attr(node, "perm", [1, 0]) != [1, 0]:
                kept.append(node)
                continue
            folded = numpy_helper.from_array(numpy_helper.to_array(init).T.copy(), node.output[0])
            self.graph.initializer.append(folded)
            self.inits[folded.name] = folded
        del self.graph.node[:]
        self.graph.node.extend(kept)

    def _weight(self, node: Any) -> str | None:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            return None
        init = self.inits.get(node.input[1])
        if init is None or len(init.dims) != 2:
            return None
        if node.op_type == "Gemm" and (
            _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0
            or _attr(node, "beta", 1.0) != 1.0 or not self._bias_only(node)
        ):  # fmt: skip
            return None
        return node.input[1]

    def _bias_only(self, node: Any) -> bool:
        """Whether a Gemm's C is absent or a constant bias vector: a Gemm that adds a computed
        tensor (a residual, a branch) is no Linear to rewrite, and stays float."""
        if len(node.input) < 3 or not node.input[2]:
            return True
        bias = self.inits.get(node.input[2])
        return bias is not None and len(bias.dims) == 1

    def _bias(self, node: Any, consumers: dict, width: int) -> tuple[str, str, Any]:
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            return node.input[2], node.output[0], None
        users = consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add":
            add = users[0]
            other = [n for n in add.input if n != node.output[0]]
            init = self.inits.get(other[0]) if len(other) == 1 else None
            if init is not None and list(init.dims) == [width]:
                return other[0], add.output[0], add
        return "", node.output[0], None

    def _per_token(self, plans: dict[int, tuple[Any, np.ndarray, str, str]]) -> dict[int, list]:
        from slimkit.quant.api import activation_scheme
        from slimkit.quant.per_token import PerTokenMatMuls, use_opset

        use_opset(self.model)
        weights = {}
        for index, (node, w, _, _) in plans.items():
            q, scale, _ = weight_qparams(w, self.cfg)  # symmetric: zero points are 0
            weights[str(index)] = (node.input[0], q, scale)
        builder = PerTokenMatMuls(self.graph, weights, activation_scheme(self.cfg).bits)
        return {
            index: builder.nodes(str(index), node.input[1] or node.name, bias, output)
            for index, (node, _, bias, output) in plans.items()
        }

    def _per_tensor(self, plans: dict[int, tuple[Any, np.ndarray, str, str]]) -> dict[int, list]:
        """``DynamicQuantizeMatMul`` for a MatMul with an input of its own. MatMuls sharing an
        input share one ``DynamicQuantizeLinear`` (the same range the fused op would compute)
        and each run ``MatMulIntegerToFloat``: the input is read and quantized once, not once
        per MatMul, as ONNX Runtime's own quantizer does for attention's q/k/v."""
        from onnx import helper

        readers: dict[str, list[int]] = {}
        for index, (node, *_) in plans.items():
            readers.setdefault(node.input[0], []).append(index)
        new_nodes: dict[int, list] = {}
        for source, indices in readers.items():
            if len(indices) == 1:
                node, w, bias, output = plans[indices[0]]
                new_nodes[indices[0]] = [helper.make_node(
                    "DynamicQuantizeMatMul", [source, *self._int8_weight(node, w), bias],
                    [output], name=self._name(node), domain=MS_DOMAIN,
                )]  # fmt: skip
                continue
            base = source.replace("/", "_") + "_shared"
            q, scale, zero = f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"
            # placed before the first reader: the plans are in graph order
            new_nodes[indices[0]] = [helper.make_node(
                "DynamicQuantizeLinear", [source], [q, scale, zero], name=base
            )]  # fmt: skip
            for index in indices:
                node, w, bias, output = plans[index]
                w_q, w_scale, w_zero = self._int8_weight(node, w)
                new_nodes.setdefault(index, []).append(helper.make_node(
                    "MatMulIntegerToFloat", [q, w_q, scale, w_scale, zero, w_zero, bias],
                    [output], name=self._name(node), domain=MS_DOMAIN,
                ))  # fmt: skip
        return new_nodes

    @staticmethod
    def _name(node: Any) -> str:
        return (node.name or node.input[1].replace("/", "_")) + "_quant"

    def _int8_weight(self, node: Any, w: np.ndarray) -> list[str]:
        """Names of the int8 weight, its scales and zero points, written once per weight."""
        from onnx import numpy_helper

        # MatMuls with equal weights (one Linear called more than once: the exporter may copy
        # its transposed weight for each call) share one int8 copy
        key = weight_digest(w)
        base = (node.input[1] or node.name).replace("/", "_")
        if key not in self.made:
            self.made[key] = [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"]
            q, scale, zero = weight_qparams(w, self.cfg)
            arrays = [q, scale.astype(np.float32), zero.astype(np.int8)]
            for name, array in zip(self.made[key], arrays, strict=True):
                self.graph.initializer.append(numpy_helper.from_array(array, name))
        return self.made[key]

    def _gather(self, node: Any) -> list[Any] | None:
        """An embedding lookup from a large constant table, rewritten to look up int8 rows and
        their per-row scales: ``Gather(q) * Gather(scale)``. The table is most of a transformer
        embedder's bytes, and only the looked-up rows are ever dequantized."""
        from onnx import TensorProto, helper, numpy_helper

        table = self.inits.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None or len(table.dims) != 2 or int(np.prod(table.dims)) < MIN_TABLE:
            return None
        if table.data_type != TensorProto.FLOAT or _attr(node, "axis", 0) != 0:
            return None
        scope = module_scope(node)
        rows = None
        if not any(is_skipped(n, self.skip) for n in (node.name, node.input[0], scope) if n):
            rows = self.table_rows(numpy_helper.to_array(table))
        if rows is None:
            self.kept.append(scope or node.name or node.input[0])
            return None
        q, scale = rows
        base = node.input[0].replace("/", "_")
        names = {
            k: f"{base}_{k}" for k in ("quantized", "row_scale", "rows", "row_scales", "float")
        }
        self.graph.initializer.extend([
            numpy_helper.from_array(q.to(torch.int8).numpy(), names["quantized"]),
            numpy_helper.from_array(scale.numpy(), names["row_scale"]),
        ])  # fmt: skip
        index, out = node.input[1], node.output[0]
        self.quantized += 1
        return [
            helper.make_node("Gather", [names["quantized"], index], [names["rows"]], axis=0),
            helper.make_node("Gather", [names["row_scale"], index], [names["row_scales"]], axis=0),
            helper.make_node("Cast", [names["rows"]], [names["float"]], to=TensorProto.FLOAT),
            helper.make_node("Mul", [names["float"], names["row_scales"]], [out]),
        ]

    def _drop_unused(self) -> None:
        used = {name for node in self.graph.node for name in node.input}
        used |= {o.name for o in self.graph.output}
        for init in list(self.graph.initializer):
            if init.name not in used:
                self.graph.initializer.remove(init)


def graph_consumers(graph: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes of an ONNX graph that read it.

    Example:
        >>> from onnx import helper
        >>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [], [])
        >>> [n.op_type for n in graph_consumers(graph)["x"]]
        ['Relu']
    """
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def weight_digest(w: np.ndarray) -> bytes:
    """A key for a constant weight's values and shape: equal weights, one key.

    Example:
        >>> weight_digest(np.ones((2, 3))) == weight_digest(np.ones((2, 3), np.float32))
        True
    """
    w = np.ascontiguousarray(w, dtype=np.float32)
    return hashlib.sha256(w.tobytes() + str(w.shape).encode()).digest()


def module_scope(node: Any) -> str | None:
    """The PyTorch module an exported ONNX node came from (the exporter's name scopes).

    The exporter lists the module path of every enclosing module, then the FX node's own name.

    Example:
        >>> from onnx import helper
        >>> node = helper.make_node("MatMul", ["x", "w"], ["y"])
        >>> scopes = "['', 'encoder', 'linear']"  # enclosing modules, then the node's own name
        >>> helper.set_metadata_props(node, {"pkg.torch.onnx.name_scopes": scopes})
        >>> module_scope(node)
        'encoder'
    """
    props = {prop.key: prop.value for prop in node.metadata_props}
    scopes = _names(props.get("pkg.torch.onnx.name_scopes", ""))
    return scopes[-2] or None if len(scopes) >= 2 else None


def _names(text: str) -> list[str]:
    return [s.strip().strip("'\"") for s in text.strip("[]").split(",")] if text else []


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default
