"""Architecture specs: the JSON that, with a safetensors file, rebuilds a model without pickle.

A spec names a factory (a zoo name, or ``package.module:function``) and its arguments, and lists
the shape of every layer. Compression that changes layer shapes (structured pruning, low-rank
factorization) therefore needs no special saving code: loading rebuilds the factory's model and
swaps in layers of the recorded shapes.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.models.registry import BUILDERS, MODELS

SPEC_ATTR = "_slimkit_spec"
# Imported on demand when a spec names a factory the zoo lacks: the compression methods register
# their builders (a quantized model), the search its searched architectures.
REGISTERING_MODULES = ("slimkit.stages", "slimkit.search.arch")

_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
         "bias", "padding_mode")  # fmt: skip
_NORM = ("num_features", "eps", "momentum", "affine", "track_running_stats")
# Leaf layers whose shape a spec records, with the constructor arguments that define them.
LAYER_ARGS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features", "bias"),
    nn.Conv1d: _CONV,
    nn.Conv2d: _CONV,
    nn.BatchNorm1d: _NORM,
    nn.BatchNorm2d: _NORM,
    nn.LayerNorm: ("normalized_shape", "eps", "elementwise_affine", "bias"),
    nn.Embedding: ("num_embeddings", "embedding_dim", "padding_idx"),
}
LAYER_TYPES = {cls.__name__: cls for cls in LAYER_ARGS}


class ModelSpec(BaseModel):
    """What is needed to rebuild a model: factory, its arguments and the layers' shapes.

    Example:
        >>> ModelSpec(name="mlp", input_shape=[1, 8, 8], num_classes=10).model_dump()
        {'name': 'mlp', 'input_shape': [1, 8, 8], 'num_classes': 10, 'kwargs': {}, 'layers': {}}
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    input_shape: list[int]
    num_classes: int
    kwargs: dict[str, Any] = Field(default_factory=dict)
    layers: dict[str, dict[str, Any]] = Field(default_factory=dict)


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    allow_import: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a zoo model (or a ``package.module:factory`` model) for the given data shape.

    The returned module carries its spec, so :func:`slimkit.save_checkpoint` can save it.

    Example:
        >>> model = build_model("lenet300", (1, 28, 28), 10)
        >>> sum(p.numel() for p in model.parameters())
        266610
    """
    factory = model_factory(name, allow_import)
    try:
        model = _call_factory(factory, list(input_shape), num_classes, kwargs)
    except TypeError as exc:
        raise SlimkitError(f"model {name!r}: bad arguments {kwargs}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise SlimkitError(
            f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    spec = ModelSpec(
        name=name, input_shape=list(input_shape), num_classes=num_classes, kwargs=kwargs
    )
    setattr(model, SPEC_ATTR, spec)
    return model


def spec_of(model: nn.Module) -> ModelSpec:
    """The spec of ``model``, with the current shape of each of its layers.

    Example:
        >>> spec = spec_of(build_model("mlp", (1, 8, 8), 10, hidden=(32,)))
        >>> spec.kwargs, spec.layers["3"]
        ({'hidden': (32,)}, {'type': 'Linear', 'in_features': 32, 'out_features': 10, 'bias': True})
    """
    spec = getattr(model, SPEC_ATTR, None)
    if spec is None:
        raise SlimkitError(
            "this model was not built by slimkit (build_model or load_model), so "
            "its architecture cannot be saved; export it to ONNX instead"
        )
    layers = {
        name: layer_config(module)
        for name, module in model.named_modules()
        if type(module) in LAYER_ARGS
    }
    return spec.model_copy(update={"layers": layers})


def model_from_spec(spec: ModelSpec, *, allow_import: bool = False) -> nn.Module:
    """Rebuild the architecture described by ``spec`` (weights uninitialised-as-built).

    Example:
        >>> model_from_spec(ModelSpec(name="lenet300", input_shape=[1, 28, 28], num_classes=10))[1]
        Linear(in_features=784, out_features=300, bias=True)
    """
    model = build_model(
        spec.name, spec.input_shape, spec.num_classes, allow_import=allow_import, **spec.kwargs
    )
    modules = dict(model.named_modules())
    expansions: dict[str, dict[int, dict[str, Any]]] = {}
    for name, config in spec.layers.items():
        if name in modules:
            if layer_config(modules[name]) != config:
                _replace(model, name, make_layer(config))
            continue
        # a layer that became a sequence of layers (low-rank factorization): "fc" -> "fc.0", "fc.1"
        parent, _, child = name.rpartition(".")
        if type(modules.get(parent)) not in LAYER_ARGS or not child.isdigit():
            raise SlimkitError(f"checkpoint names layer {name!r}, which {spec.name} does not have")
        expansions.setdefault(parent, {})[int(child)] = config
    for parent, children in expansions.items():
        _replace(model, parent, nn.Sequential(*(make_layer(children[i]) for i in sorted(children))))
    setattr(model, SPEC_ATTR, spec.model_copy(update={"layers": {}}))
    return model


def layer_config(module: nn.Module) -> dict[str, Any]:
    """The constructor arguments of a supported layer, JSON-ready.

    Example:
        >>> layer_config(nn.Linear(4, 2))
        {'type': 'Linear', 'in_features': 4, 'out_features': 2, 'bias': True}
    """
    config: dict[str, Any] = {"type": type(module).__name__}
    for arg in LAYER_ARGS[type(module)]:
        value = getattr(module, arg)
        if arg == "bias":
            value = value is not None if not isinstance(value, bool) else value
        config[arg] = list(value) if isinstance(value, tuple) else value
    return config


def make_layer(config: dict[str, Any]) -> nn.Module:
    """Construct a layer from :func:`layer_config` output.

    Example:
        >>> make_layer({"type": "Linear", "in_features": 4, "out_features": 2, "bias": False})
        Linear(in_features=4, out_features=2, bias=False)
    """
    args = dict(config)
    cls = LAYER_TYPES.get(args.pop("type", None))
    if cls is None or set(args) - set(LAYER_ARGS[cls]):
        raise SlimkitError(f"unsupported layer in spec: {config}")
    for key, value in args.items():
        if isinstance(value, list):
            args[key] = tuple(value)
    return cls(**args)


def _replace(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, layer)


def model_factory(name: str, allow_import: bool = True) -> Any:
    """The callable that builds the model ``name`` (a zoo or registered name, or
    ``package.module:function`` when ``allow_import``); raises :class:`SlimkitError` for an
    unknown name, so a command can check its ``--model`` before loading any data.

    Example:
        >>> model_factory("lenet300").__name__
        'lenet300'
        >>> model_factory("vgg99")
        Traceback (most recent call last):
        ...
        slimkit.errors.SlimkitError: unknown model 'vgg99'; known: ...
    """
    if name not in MODELS and ":" not in name:
        for module in REGISTERING_MODULES:
            importlib.import_module(module)
    if name in BUILDERS:
        return BUILDERS.get(name)
    if name in MODELS or ":" not in name:
        return MODELS.get(name)
    if not allow_import:
        raise SlimkitError(
            f"this file names the model factory {name!r}; loading it would run "
            "that code, so it is refused unless you allow imports "
            "(--allow-import / allow_import=True)"
        )
    module_name, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SlimkitError(f"cannot import model factory {name!r}: {exc}") from None
    if not callable(factory):
        raise SlimkitError(f"{name!r} is not callable")
    return factory


def _call_factory(
    factory, input_shape: list[int], num_classes: int, kwargs: dict[str, Any]
) -> nn.Module:
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    shape_args = {}
    if "input_shape" in params or takes_any:
        shape_args["input_shape"] = tuple(input_shape)
    if "num_classes" in params or takes_any:
        shape_args["num_classes"] = num_classes
    return factory(**shape_args, **kwargs)
