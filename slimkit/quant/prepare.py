"""Prepare a model for static quantization: trace, fold batch norms, place fake-quantizers.

The traced graph (``torch.fx``) gets an :class:`~slimkit.quant.fake.ActFakeQuant` wherever ONNX
Runtime's integer kernels need a quantized tensor, following its QDQ conventions:

- the input of every quantized Conv/Linear (reusing the quantizer of an earlier tensor when only
  max-pooling, flattening, reshaping or dropout lie in between, so that those run in int8 too);
- the output of every quantized Conv/Linear and of every residual addition, taken after a ReLU
  that follows it (the ReLU then folds into the quantizer's clamp: Jacob et al. 2018, 2.4).

Weights get a :class:`~slimkit.quant.fake.WeightFakeQuant` parametrization.
"""

from __future__ import annotations

import fnmatch
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import parametrize

from slimkit.errors import SlimkitError
from slimkit.measure._common import first_line
from slimkit.measure.predict import forward_checked
from slimkit.quant.fake import ActFakeQuant, FakeQuant, WeightFakeQuant
from slimkit.quant.fold import fold_batchnorm
from slimkit.quant.observers import QScheme

QUANT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
PASS_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity, nn.Unflatten)
PASS_FUNCTIONS = {torch.flatten, F.max_pool2d, F.dropout, torch.reshape}
PASS_METHODS = {"flatten", "view", "reshape", "contiguous"}
RELUS = (nn.ReLU, nn.ReLU6)
ADDS = {operator.add, torch.add, operator.iadd}
META = "_slimkit_quant"  # attribute holding what was done, for export and checkpoints


@dataclass
class Plan:
    """What :func:`prepare_static` placed: per layer, its weight and input quantizers.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
        >>> gm, plan = prepare_static(net, QScheme(axis=0), QScheme(symmetric=False, signed=False))
        >>> plan.folded, sorted(plan.layers)
        ([('0', '1')], ['0'])
    """

    folded: list[tuple[str, str]] = field(default_factory=list)
    layers: dict[str, dict[str, str | None]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with a clear error for models it cannot trace.

    Example:
        >>> gm = trace(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
        >>> [node.target for node in gm.graph.find_nodes(op="call_module")]
        ['0', '1']
    """
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable Python
        raise SlimkitError(
            f"static quantization needs a model torch.fx can trace ({first_line(exc)}); "
            "use mode 'dynamic' or 'weight-only', which work on any model"
        ) from None


def prepare_static(
    model: nn.Module,
    weight: QScheme,
    activation: QScheme,
    *,
    observer: str = "minmax",
    weight_observer: str = "minmax",
    skip: list[str] | None = None,
    quantize_output: bool = False,
    learn: bool = False,
    options: dict[str, float] | None = None,
) -> tuple[fx.GraphModule, Plan]:
    """Trace a copy of ``model``, fold its batch norms and place fake-quantizers (observing).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
        >>> gm, plan = prepare_static(net.eval(), QScheme(axis=0),
        ...                           QScheme(symmetric=False, signed=False))
        >>> sorted(plan.layers)
        ['0', '3']
    """
    import copy

    gm = trace(copy.deepcopy(model).eval())
    plan = Plan(folded=fold_batchnorm(gm))
    modules = dict(gm.named_modules())
    targets = [
        n
        for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(modules[n.target], QUANT_LAYERS)
    ]
    if not targets:
        raise SlimkitError("the model has no Conv or Linear layer to quantize")
    counter = _Counter(gm, activation, observer, learn, options or {})
    for node in targets:
        if any(fnmatch.fnmatchcase(node.target, pattern) for pattern in skip or []):
            plan.skipped.append(node.target)
            continue
        _quantize_output(gm, node, counter, quantize_output)
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in ADDS and _is_tensor_add(node):
            _quantize_output(gm, node, counter, quantize_output)
    for node in targets:
        if node.target in plan.skipped:
            continue
        plan.layers[node.target] = {
            "weight": _weight_quant(modules[node.target], weight, weight_observer, learn, options),
            "input": _quantize_input(gm, node, counter),
        }
    gm.graph.lint()
    gm.recompile()
    return gm, plan


class _Counter:
    """Makes numbered activation quantizers and remembers which node each one quantizes."""

    def __init__(
        self, gm: fx.GraphModule, scheme: QScheme, observer: str, learn: bool, options: dict
    ) -> None:
        self.gm, self.scheme, self.observer, self.learn = gm, scheme, observer, learn
        self.options = options if observer == "percentile" else {}
        self.count = 0
        self.source: dict[fx.Node, str] = {}  # quantizer call node -> quantizer name

    def new(self) -> str:
        name = f"act_quant_{self.count}"
        self.count += 1
        self.gm.add_module(name, ActFakeQuant(self.scheme, self.observer, self.learn, self.options))
        return name

    def insert_after(self, node: fx.Node, name: str, only: fx.Node | None = None) -> fx.Node:
        with self.gm.graph.inserting_after(node):
            call = self.gm.graph.call_module(name, (node,))
        if only is None:
            node.replace_all_uses_with(call, delete_user_cb=lambda user: user is not call)
        else:
            only.replace_input_with(node, call)
        self.source[call] = name
        return call


def _is_tensor_add(node: fx.Node) -> bool:
    return len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args)


def _quantize_output(gm: fx.GraphModule, node: fx.Node, counter: _Counter, last: bool) -> None:
    out = node
    users = list(node.users)
    if len(users) == 1 and _is_relu(gm, users[0]):
        out = users[0]
    if not last and any(user.op == "output" for user in out.users):
        return  # the logits stay float: the last layer then outputs float (MatMulIntegerToFloat)
    counter.insert_after(out, counter.new())


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), RELUS)
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu)
    return node.op == "call_method" and node.target == "relu"


def _is_passthrough(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), (*PASS_MODULES, *RELUS))
    if node.op == "call_function":
        return node.target in PASS_FUNCTIONS or node.target in (F.relu, torch.relu)
    return node.op == "call_method" and node.target in PASS_METHODS


def _quantize_input(gm: fx.GraphModule, layer: fx.Node, counter: _Counter) -> str:
    """Name of the quantizer feeding ``layer``: an existing one, re-applied, or a new one."""
    source = layer.args[0]
    if source in counter.source:
        return counter.source[source]
    walk = source
    while isinstance(walk, fx.Node) and _is_passthrough(gm, walk) and walk not in counter.source:
        walk = walk.args[0]
    name = counter.source.get(walk) if isinstance(walk, fx.Node) else None
    # Re-applying the same quantizer after max-pool/flatten changes no value (they keep the
    # grid) but gives ONNX Runtime the Q/DQ pair it needs to run those ops in int8.
    counter.insert_after(source, name or counter.new(), only=layer)
    return name or f"act_quant_{counter.count - 1}"


def _weight_quant(
    layer: nn.Module, scheme: QScheme, observer: str, learn: bool, options: dict | None = None
) -> str:
    weight = layer.weight
    if not torch.isfinite(weight).all():
        raise SlimkitError(
            "a weight holds NaN or infinite values; quantization needs a finite model "
            "(retrain it or restore a good checkpoint)"
        )
    options = (options or {}) if observer == "percentile" else {}
    quant = WeightFakeQuant(scheme, observer, learn, options)
    parametrize.register_parametrization(layer, "weight", quant)
    quant.calibrate(layer.parametrizations.weight.original.detach())
    return "weight"


def calibrate(gm: fx.GraphModule, batches: list[torch.Tensor]) -> None:
    """Run calibration batches through the observers, then freeze every activation quantizer.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 2)).eval()
        >>> gm, _ = prepare_static(net, QScheme(axis=0), QScheme(symmetric=False, signed=False))
        >>> calibrate(gm, [torch.randn(8, 4)])
        >>> {q.mode for q in fake_quantizers(gm)}
        {'quant'}
    """
    quantizers = [m for m in gm.modules() if isinstance(m, ActFakeQuant)]
    for q in quantizers:
        q.mode = "observe"
    was_training = gm.training
    gm.eval()
    with torch.no_grad():
        for i, batch in enumerate(batches):
            if i == 0:  # a clear error for data of the wrong shape
                forward_checked(gm, batch, tuple(batch.shape[1:]))
            else:
                gm(batch)
    gm.train(was_training)
    for q in quantizers:
        q.freeze()
        q.observer = None  # histograms are large and not needed once the range is chosen


def fake_quantizers(model: nn.Module) -> list[FakeQuant]:
    """Every weight and activation fake-quantizer of ``model``.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 2)).eval()
        >>> gm, _ = prepare_static(net, QScheme(axis=0), QScheme(symmetric=False, signed=False))
        >>> sorted(type(q).__name__ for q in fake_quantizers(gm))
        ['ActFakeQuant', 'WeightFakeQuant']
    """
    return [m for m in model.modules() if isinstance(m, FakeQuant)]
