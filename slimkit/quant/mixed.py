"""Mixed precision: keep the layers whose quantization costs the most in float.

Per-layer sensitivity is the validation metric with only that layer quantized (its weights and
its input), everything else float (as in HAWQ's and Wu et al. 2020's sensitivity analysis,
section 5.1, measured rather than estimated). Layers are then returned to float from the most
sensitive down until the fully quantized model is within the accuracy budget.
"""

from __future__ import annotations

from torch import fx, nn

from slimkit.data import Dataset
from slimkit.measure import evaluate
from slimkit.quant.config import QuantConfig
from slimkit.quant.fake import ActFakeQuant
from slimkit.quant.prepare import Plan


def set_float(gm: fx.GraphModule, layers: list[str], on: bool = True) -> None:
    """Keep ``layers`` float (weights and the input quantizer they alone use), or quantize again.

    Example:
        >>> import torch
        >>> from slimkit.quant.observers import QScheme
        >>> from slimkit.quant.prepare import calibrate, prepare_static
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
        >>> gm, plan = prepare_static(net, QScheme(axis=0), QScheme(symmetric=False, signed=False))
        >>> calibrate(gm, [torch.randn(8, 4)])
        >>> set_float(gm, ["2"])
        >>> gm.get_submodule("2").parametrizations.weight[0].mode
        'off'
    """
    users: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), ActFakeQuant):
            users[node.target] = users.get(node.target, 0) + 1
    for name in layers:
        layer = gm.get_submodule(name)
        layer.parametrizations.weight[0].mode = "off" if on else "quant"
        quant_name = _input_quant(gm, name)
        if quant_name is not None and users.get(quant_name, 0) == 1:
            gm.get_submodule(quant_name).mode = "off" if on else "quant"


def _input_quant(gm: fx.GraphModule, layer: str) -> str | None:
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == layer:
            source = node.args[0]
            if source.op == "call_module" and isinstance(
                gm.get_submodule(source.target), ActFakeQuant
            ):
                return source.target
    return None


def sensitivity(gm: fx.GraphModule, plan: Plan, data: Dataset) -> dict[str, float]:
    """Validation metric with only each layer quantized (higher: less sensitive).

    Example:
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> from slimkit.quant.observers import QScheme
        >>> from slimkit.quant.prepare import calibrate, prepare_static
        >>> data = load_data("digits")
        >>> net = build_model("mlp", data.input_shape, 10).eval()
        >>> gm, plan = prepare_static(net, QScheme(axis=0), QScheme(symmetric=False, signed=False))
        >>> calibrate(gm, [data.train.x[:64]])
        >>> scores = sensitivity(gm, plan, data)
        >>> sorted(scores) == sorted(plan.layers) and all(0 <= s <= 1 for s in scores.values())
        True
    """
    layers = list(plan.layers)
    activations = [m for m in gm.modules() if isinstance(m, ActFakeQuant)]
    modes = {id(q): q.mode for q in activations}
    set_float(gm, layers, True)
    for q in activations:
        q.mode = "off"
    scores = {}
    for name in layers:
        set_float(gm, [name], False)
        quant_name = _input_quant(gm, name)
        if quant_name is not None:
            gm.get_submodule(quant_name).mode = "quant"
        scores[name] = evaluate(gm, data.val)
        set_float(gm, [name], True)
        if quant_name is not None:
            gm.get_submodule(quant_name).mode = "off"
    set_float(gm, layers, False)
    for q in activations:
        q.mode = modes[id(q)]
    return scores


def keep_sensitive_float(
    gm: fx.GraphModule, plan: Plan, float_model: nn.Module, data: Dataset, cfg: QuantConfig
) -> list[str]:
    """Return layers to float, most sensitive first, until the validation metric is within
    ``cfg.accuracy_budget`` (absolute, e.g. 0.001 = 0.1 point) of the float model's.

    Example:
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> from slimkit.quant import quantize
        >>> data = load_data("digits")
        >>> q = quantize(build_model("mlp", data.input_shape, 10), data=data, accuracy_budget=1.0)
        >>> q._slimkit_quant["float_layers"]
        []
    """
    target = evaluate(float_model, data.val) - cfg.accuracy_budget
    if evaluate(gm, data.val) >= target:
        return []
    scores = sensitivity(gm, plan, data)
    kept: list[str] = []
    for name in sorted(scores, key=scores.get):
        set_float(gm, [name], True)
        kept.append(name)
        if evaluate(gm, data.val) >= target:
            break
    return kept
