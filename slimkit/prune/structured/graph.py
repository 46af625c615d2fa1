"""Channel dependencies traced from the model's graph with ``torch.fx``.

Every tensor's channel axis (dim 1) is described by a *layout*: a sequence of segments, each one
*channel space* repeated ``repeat`` times per channel (a flatten into a Linear repeats each
channel once per spatial position; a concatenation lists several spaces). A Conv or Linear creates
a new space for its outputs. Operations then tie spaces together:

- batch norm and depthwise convolution act per channel: same space in and out;
- elementwise ``add``/``sub``/``mul`` of two tensors (residual connections) merge both spaces into
  one *group*, so all producers of an add group are pruned together;
- ``cat`` along channels concatenates layouts; ``flatten`` scales the repeat;
- activations, pooling and dropout pass the layout through.

A group can lose channels only if every op touching it is understood. The model's input and
output, grouped convolutions, normalisations across channels and any op not listed here *block*
the groups they touch, each with a reason that the pruning result reports.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from slimkit.errors import SlimkitError
from slimkit.layers import matches
from slimkit.measure._common import eval_mode, root_cause


@dataclass(frozen=True)
class Segment:
    """``size`` channels of channel space ``space``, each repeated ``repeat`` times.

    Example:
        >>> from slimkit.models import build_model
        >>> model = build_model("cnn-small", (1, 8, 8), 10)  # 32 channels of 2x2, flattened
        >>> dependency_graph(model, torch.zeros(2, 1, 8, 8)).uses["classifier.1"].layout
        (Segment(space=2, size=32, repeat=4),)
    """

    space: int
    size: int
    repeat: int = 1


Layout = tuple[Segment, ...]

_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
)  # fmt: skip
_PASS_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.leaky_relu, F.elu, F.hardswish, torch.sigmoid,
    F.sigmoid, torch.tanh, F.tanh, F.dropout, F.max_pool1d, F.max_pool2d, F.max_pool3d,
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.interpolate, torch.clamp,
}  # fmt: skip
_PASS_METHODS = {
    "relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach", "clamp", "float",
}  # fmt: skip
_ELEMENTWISE = {operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul,
                operator.iadd, operator.imul}  # fmt: skip
_ELEMENTWISE_METHODS = {"add", "sub", "mul", "add_", "mul_"}
_RESHAPES = {torch.flatten, torch.reshape}
_RESHAPE_METHODS = {"flatten", "view", "reshape"}
_REDUCTIONS = {torch.mean, torch.sum, torch.amax}
_REDUCTION_METHODS = {"mean", "sum", "amax"}
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class Use:
    """One module's tie to channel layouts: what it consumes and, for producers, its space.

    Example:
        >>> from slimkit.models import build_model
        >>> model = build_model("cnn-small", (1, 8, 8), 10)
        >>> use = dependency_graph(model, torch.zeros(2, 1, 8, 8)).uses["features.1"]
        >>> type(use.module).__name__, use.role, use.out_space
        ('BatchNorm2d', 'channelwise', None)
    """

    name: str
    module: nn.Module
    role: str  # "layer" (consumes in, produces out) or "channelwise" (BN, depthwise conv)
    layout: Layout = ()  # input layout
    out_space: int | None = None


@dataclass
class DependencyGraph:
    """Channel spaces merged into groups, with the modules that slice each group.

    ``blocked`` maps a group root to the reasons it cannot be pruned.

    Example:
        >>> graph = DependencyGraph()
        >>> a, b = graph.new_space(4), graph.new_space(8)
        >>> graph.union(a, b)
        >>> graph.blocked(b)
        ['channel counts 4 and 8 are tied']
    """

    parent: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    reasons: dict[int, list[str]] = field(default_factory=dict)
    uses: dict[str, Use] = field(default_factory=dict)
    output_shape: tuple[int, ...] = ()

    def new_space(self, size: int, reason: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        if reason:
            self.block(len(self.parent) - 1, reason)
        return len(self.parent) - 1

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        self.reasons.setdefault(ra, []).extend(self.reasons.pop(rb, []))
        if self.sizes[ra] != self.sizes[rb]:
            self.block(ra, f"channel counts {self.sizes[ra]} and {self.sizes[rb]} are tied")

    def block(self, space: int, reason: str) -> None:
        root = self.find(space)
        if reason not in self.reasons.setdefault(root, []):
            self.reasons[root].append(reason)

    def block_layout(self, layout: Layout | None, reason: str) -> None:
        for segment in layout or ():
            self.block(segment.space, reason)

    def groups(self) -> dict[int, list[str]]:
        """Group root -> names of the modules producing its channels (Conv/Linear outputs)."""
        out: dict[int, list[str]] = {}
        for use in self.uses.values():
            if use.out_space is not None:
                out.setdefault(self.find(use.out_space), []).append(use.name)
        return out

    def blocked(self, root: int) -> list[str]:
        return self.reasons.get(self.find(root), [])


class _Tracer(fx.Tracer):
    """An fx tracer that keeps modules named by ``leaf_patterns`` opaque (not traced into)."""

    def __init__(self, leaf_patterns: Sequence[str]) -> None:
        super().__init__()
        self.leaf_patterns = list(leaf_patterns)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if any(matches(qualname, p) for p in self.leaf_patterns):
            return True
        return super().is_leaf_module(m, qualname)


def trace_graph(
    model: nn.Module, example: torch.Tensor, leaf_modules: Sequence[str] = ()
) -> fx.GraphModule:
    """Trace ``model`` with torch.fx and annotate each node with its output shape.

    Example:
        >>> from slimkit.models import build_model
        >>> gm = trace_graph(build_model("lenet300", (1, 8, 8), 10), torch.zeros(2, 1, 8, 8))
        >>> [n.op for n in gm.graph.nodes][:2]
        ['placeholder', 'call_module']
    """
    tracer = _Tracer(leaf_modules)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types; all mean "cannot trace"
        raise SlimkitError(
            "structured pruning traces the model with torch.fx, which failed: "
            f"{root_cause(exc)}. Name the untraceable submodule in 'leaf_modules' (it is then "
            "left whole) or use method 'magnitude'"
        ) from None
    gm = fx.GraphModule(tracer.root, graph)
    try:
        with eval_mode(gm), torch.no_grad():
            ShapeProp(gm).propagate(example)
    except Exception as exc:
        raise SlimkitError(
            f"the traced model fails on an example input: {root_cause(exc)}"
        ) from None
    return gm


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def _layout_size(layout: Layout) -> int:
    return sum(s.size * s.repeat for s in layout)


class _Builder:
    """Walks the fx graph once, node by node, assigning a layout to each tensor."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.graph = DependencyGraph()
        self.layouts: dict[fx.Node, Layout] = {}
        self.modules = dict(gm.named_modules())

    # -- helpers -------------------------------------------------------------------------------
    def fresh(self, node: fx.Node, reason: str | None) -> Layout | None:
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        return (Segment(self.graph.new_space(shape[1], reason), shape[1]),)

    def tensor_inputs(self, node: fx.Node) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n))
        return [n for n in found if n in self.layouts]

    def opaque(self, node: fx.Node, what: str) -> Layout | None:
        """An op this tracer does not model: block everything it touches."""
        reason = f"unsupported op {what}"
        for arg in self.tensor_inputs(node):
            self.graph.block_layout(self.layouts[arg], reason)
        return self.fresh(node, reason)

    def tracked(self, value: Any) -> bool:
        return isinstance(value, fx.Node) and value in self.layouts

    def unify(self, a: Layout, b: Layout) -> bool:
        if [(s.size, s.repeat) for s in a] != [(s.size, s.repeat) for s in b]:
            return False
        for sa, sb in zip(a, b, strict=True):
            self.graph.union(sa.space, sb.space)
        return True

    def passthrough(self, node: fx.Node, source: fx.Node, what: str) -> Layout | None:
        shape_in, shape_out = _shape(source), _shape(node)
        if not self.tracked(source) or shape_in is None or shape_out is None:
            return self.opaque(node, what)
        if len(shape_out) < 2 or shape_out[1] != shape_in[1]:
            return self.opaque(node, what)
        return self.layouts[source]

    # -- node kinds ----------------------------------------------------------------------------
    def run(self) -> DependencyGraph:
        for node in self.gm.graph.nodes:
            layout = self.visit(node)
            if layout is not None:
                self.layouts[node] = layout
        return self.graph

    def visit(self, node: fx.Node) -> Layout | None:
        if node.op == "placeholder":
            return self.fresh(node, "model input")
        if node.op == "get_attr":
            return self.fresh(node, f"constant tensor {node.target}")
        if node.op == "output":
            for arg in self.tensor_inputs(node):
                self.graph.block_layout(self.layouts[arg], "model output")
                self.graph.output_shape = _shape(arg) or ()
            return None
        if node.op == "call_module":
            return self.module(node, self.modules[node.target])
        if _shape(node) is None and not self.tensor_inputs(node):
            return None  # sizes, shapes and other non-tensor arithmetic
        if node.op == "call_method":
            return self.method(node)
        return self.function(node)

    def module(self, node: fx.Node, module: nn.Module) -> Layout | None:
        name = str(node.target)
        source = node.args[0] if node.args else None
        layout = self.layouts[source] if self.tracked(source) else None
        if isinstance(module, _ACTIVATIONS):
            return self.passthrough(node, source, f"{type(module).__name__} '{name}'")
        if isinstance(module, nn.Flatten):
            return self.reshape(node, source, f"Flatten '{name}'")
        if layout is None:
            return self.opaque(node, f"{type(module).__name__} '{name}'")
        if isinstance(module, _NORMS):
            return self.channelwise(node, name, module, layout)
        if isinstance(module, _CONVS):
            return self.conv(node, name, module, layout)
        if isinstance(module, nn.Linear):
            if len(_shape(source) or ()) != 2:
                return self.opaque(node, f"Linear '{name}' on a tensor of more than 2 dims")
            return self.layer(node, name, module, layout, module.out_features)
        return self.opaque(node, f"{type(module).__name__} '{name}'")

    def conv(self, node: fx.Node, name: str, conv: nn.Module, layout: Layout) -> Layout | None:
        depthwise = conv.groups == conv.in_channels == conv.out_channels
        if conv.groups == 1:
            return self.layer(node, name, conv, layout, conv.out_channels)
        if depthwise:
            return self.channelwise(node, name, conv, layout)
        return self.opaque(
            node, f"grouped convolution '{name}' (groups={conv.groups}, channels must stay "
            "divisible by groups)"
        )  # fmt: skip

    def channelwise(self, node: fx.Node, name: str, module: nn.Module, layout: Layout):
        """BatchNorm and depthwise conv: channel c in is channel c out."""
        if any(s.repeat != 1 for s in layout):
            return self.opaque(node, f"{type(module).__name__} '{name}' after a flatten")
        if not self.remember(node, name, module, "channelwise", layout):
            return self.opaque(node, f"'{name}' called on differently shaped inputs")
        return layout

    def layer(self, node: fx.Node, name: str, module: nn.Module, layout: Layout, out: int):
        """Conv (groups=1) or Linear: consumes ``layout``, produces its own output space."""
        if isinstance(module, _CONVS) and any(s.repeat != 1 for s in layout):
            return self.opaque(node, f"conv '{name}' after a flatten")
        if not self.remember(node, name, module, "layer", layout):
            return self.opaque(node, f"'{name}' called on differently shaped inputs")
        use = self.graph.uses[name]
        if use.out_space is None:
            use.out_space = self.graph.new_space(out)
        return (Segment(use.out_space, out),)

    def remember(self, node: fx.Node, name: str, module: nn.Module, role: str, layout: Layout):
        """Record a module's input layout; a module called twice must see matching layouts."""
        previous = self.graph.uses.get(name)
        if previous is None:
            self.graph.uses[name] = Use(name, module, role, layout)
            return True
        return self.unify(previous.layout, layout)

    def reshape(self, node: fx.Node, source: Any, what: str) -> Layout | None:
        """Flatten, view or reshape: supported when it keeps the batch axis and folds the rest
        into dim 1 (each channel then spans ``prod(spatial)`` consecutive features)."""
        shape_in, shape_out = _shape(source), _shape(node)
        if not self.tracked(source) or shape_in is None or shape_out is None:
            return self.opaque(node, what)
        if shape_out == shape_in:
            return self.layouts[source]
        folds = (
            len(shape_in) > 2
            and len(shape_out) == 2
            and shape_out[0] == shape_in[0]
            and shape_out[1] == math.prod(shape_in[1:])
        )
        if not folds:
            return self.opaque(node, what)
        spatial = math.prod(shape_in[2:])
        return tuple(Segment(s.space, s.size, s.repeat * spatial) for s in self.layouts[source])

    def elementwise(self, node: fx.Node, what: str) -> Layout | None:
        inputs = self.tensor_inputs(node)
        if len(inputs) == 1:
            return self.passthrough(node, inputs[0], what)
        shapes = {_shape(n)[1] if _shape(n) and len(_shape(n)) > 1 else None for n in inputs}
        first = self.layouts[inputs[0]]
        if len(shapes) == 1 and all(self.unify(first, self.layouts[n]) for n in inputs[1:]):
            return first
        return self.opaque(node, f"{what} of tensors with different channel layouts")

    def cat(self, node: fx.Node) -> Layout | None:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors", ())
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        parts = [t for t in tensors if isinstance(t, fx.Node)]
        if len(parts) != len(tensors) or not all(self.tracked(p) for p in parts):
            return self.opaque(node, "cat of untracked tensors")
        ndim = len(_shape(node) or ())
        if dim % max(ndim, 1) == 1:
            return tuple(seg for p in parts for seg in self.layouts[p])
        if all(self.unify(self.layouts[parts[0]], self.layouts[p]) for p in parts[1:]):
            return self.layouts[parts[0]]
        return self.opaque(node, "cat of tensors with different channel layouts")

    def reduction(self, node: fx.Node, source: Any, what: str) -> Layout | None:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        ndim = len(_shape(source) or ())
        dims = (dims,) if isinstance(dims, int) else dims
        if not dims or any(not isinstance(d, int) for d in dims):
            return self.opaque(node, what)
        if any(d % ndim in (0, 1) for d in dims):
            return self.opaque(node, f"{what} over the batch or channel axis")
        return self.layouts[source] if self.tracked(source) else self.opaque(node, what)

    def method(self, node: fx.Node) -> Layout | None:
        name, source = str(node.target), node.args[0]
        if name in _PASS_METHODS:
            return self.passthrough(node, source, f"method {name}")
        if name in _RESHAPE_METHODS:
            return self.reshape(node, source, f"method {name}")
        if name in _ELEMENTWISE_METHODS:
            return self.elementwise(node, f"method {name}")
        if name in _REDUCTION_METHODS:
            return self.reduction(node, source, f"method {name}")
        if name in ("size", "dim"):
            return None
        return self.opaque(node, f"method {name}")

    def function(self, node: fx.Node) -> Layout | None:
        fn = node.target
        what = f"function {getattr(fn, '__name__', fn)}"
        source = node.args[0] if node.args else None
        if fn in _PASS_FUNCTIONS:
            return self.passthrough(node, source, what)
        if fn in _RESHAPES:
            return self.reshape(node, source, what)
        if fn in _ELEMENTWISE:
            return self.elementwise(node, what)
        if fn in (torch.cat, torch.concat):
            return self.cat(node)
        if fn in _REDUCTIONS:
            return self.reduction(node, source, what)
        if fn is getattr and not self.tensor_inputs(node):
            return None
        return self.opaque(node, what)


def dependency_graph(
    model: nn.Module, example: torch.Tensor, leaf_modules: Sequence[str] = ()
) -> DependencyGraph:
    """Trace ``model`` and return its channel groups and the reasons some are blocked.

    Example:
        >>> from slimkit.models import build_model
        >>> model = build_model("lenet300", (1, 8, 8), 10)
        >>> graph = dependency_graph(model, torch.zeros(2, 1, 8, 8))
        >>> sorted(tuple(v) for v in graph.groups().values())
        [('1',), ('3',), ('5',)]
    """
    gm = trace_graph(model, example, leaf_modules)
    graph = _Builder(gm).run()
    # Modules come from the traced copy; point them back at the caller's model.
    named = dict(model.named_modules())
    for use in graph.uses.values():
        use.module = named.get(use.name, use.module)
    return graph
