"""A declared search space: the choices a search makes, validated before any trial runs.

A space is data, not a loop: per choice either a list of options or a range. It is written in
YAML or built in Python, and samples itself through an Optuna trial (``trial.suggest_*``), so any
Optuna sampler can search it. Per-layer choices (width, kernel, block) are drawn once per layer
as ``width_0``, ``width_1``, ...; the layers beyond the sampled depth simply do not exist in that
trial (Optuna's define-by-run, conditional parameters).

YAML example (``cnn`` family; every key but ``family`` is optional and defaults to one fixed
value)::

    family: cnn
    depth: [1, 2, 3]                  # feature stages (cnn) or hidden layers (mlp)
    width: {low: 8, high: 64, step: 8}
    kernel: [3, 5]
    block: [conv, dwsep, residual]
    activation: [relu, silu]
    dropout: [0.0, 0.2]
    hidden: [0, 64]                   # hidden units of the classifier head (cnn)
    head: [gap, flatten]              # global average pooling or flatten (cnn)
    lr: {low: 0.0005, high: 0.01, log: true}
    batch_size: [64, 128]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.search.arch import ACTIVATIONS, CNN_BLOCKS, HEADS, MLP_BLOCKS


class IntRange(BaseModel):
    """Integers from ``low`` to ``high`` inclusive, every ``step`` (or log-uniform).

    Example:
        >>> IntRange(low=8, high=64, step=8).size()
        8
    """

    model_config = ConfigDict(extra="forbid")

    low: int
    high: int
    step: int = 1
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        _check_range(self.low, self.high, self.log)
        if self.step < 1 or (self.log and self.step != 1):
            raise ValueError("step must be at least 1 (and 1 with log)")
        return self

    def size(self) -> float:
        return (self.high - self.low) // self.step + 1


class FloatRange(BaseModel):
    """Reals from ``low`` to ``high``, uniform or log-uniform.

    Example:
        >>> FloatRange(low=1e-4, high=1e-2, log=True).size()
        inf
    """

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        _check_range(self.low, self.high, self.log)
        return self

    def size(self) -> float:
        return math.inf if self.high > self.low else 1


def _check_range(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low ({low}) is above high ({high})")
    if log and low <= 0:
        raise ValueError("a log range needs low > 0")


IntChoice = list[int] | IntRange
FloatChoice = list[float] | FloatRange
# The smallest value each numeric choice may take, and whether it is exclusive.
LOWER: dict[str, tuple[float, bool]] = {
    "depth": (1, False), "width": (1, False), "kernel": (1, False), "hidden": (0, False),
    "dropout": (0, False), "lr": (0, True), "batch_size": (1, False),
}  # fmt: skip
CNN_ONLY = ("kernel", "hidden", "head")
FIELDS = ("depth", "width", "kernel", "block", "activation", "dropout", "hidden", "head", "lr",
          "batch_size")  # fmt: skip


class Candidate(BaseModel):
    """One sampled point: the architecture (factory kwargs) and its training settings.

    Example:
        >>> c = Candidate(family="mlp", arch={"layers": [{"width": 16, "block": "plain"}]})
        >>> c.build((1, 8, 8), 10)[-1].out_features
        10
    """

    model_config = ConfigDict(extra="forbid")

    family: Literal["mlp", "cnn"]
    arch: dict[str, Any]
    lr: float = 1e-3
    batch_size: int = 64

    @property
    def model_name(self) -> str:
        """The zoo name of the factory that builds it (``searched-mlp`` / ``searched-cnn``)."""
        return f"searched-{self.family}"

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """The model, carrying its spec so that a checkpoint can rebuild it."""
        from slimkit.models import build_model

        return build_model(self.model_name, input_shape, num_classes, **self.arch)


class SearchSpace(BaseModel):
    """The choices of a neural architecture search (see the module docstring for the YAML form).

    Each numeric choice is a list of options or a range (:class:`IntRange`, :class:`FloatRange`);
    a single value means "fixed". At least one choice must have two or more options.

    Example:
        >>> import optuna
        >>> space = SearchSpace(family="mlp", depth=[1, 2], width=[16, 32])
        >>> trial = optuna.trial.FixedTrial({"depth": 2, "width_0": 16, "width_1": 32})
        >>> [layer["width"] for layer in space.sample(trial).arch["layers"]]
        [16, 32]
    """

    model_config = ConfigDict(extra="forbid")

    family: Literal["mlp", "cnn"]
    depth: IntChoice = [2]
    width: IntChoice = [64]
    kernel: IntChoice | None = None
    block: list[str] | None = None
    activation: list[str] = ["relu"]
    dropout: FloatChoice = [0.0]
    hidden: IntChoice | None = None
    head: list[str] | None = None
    lr: FloatChoice = [1e-3]
    batch_size: IntChoice = [64]

    @field_validator(*FIELDS, mode="before")
    @classmethod
    def _scalar_is_fixed(cls, value: Any) -> Any:
        # `depth: 2` in YAML means one fixed option; a mapping is a range.
        return [value] if isinstance(value, (int, float, str)) else value

    @field_validator(*FIELDS)
    @classmethod
    def _options(cls, value: Any, info: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("lists no options; give at least one")
            if len(set(value)) != len(value):
                raise ValueError(f"repeats an option: {value}")
        if info.field_name in LOWER and value is not None:
            _check_lower(info.field_name, value)
        return value

    @model_validator(mode="after")
    def _fits_family(self) -> SearchSpace:
        if self.family == "mlp":
            given = [name for name in CNN_ONLY if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} apply to the cnn family only")
        else:
            self.kernel = self.kernel or [3]
            self.hidden = self.hidden if self.hidden is not None else [0]
            self.head = self.head or ["gap"]
            _check_names("head", self.head, HEADS)
            if isinstance(self.kernel, list) and any(k % 2 == 0 for k in self.kernel):
                raise ValueError(f"kernel sizes must be odd, got {self.kernel}")
        blocks = CNN_BLOCKS if self.family == "cnn" else MLP_BLOCKS
        self.block = self.block or [blocks[0]]
        _check_names("block", self.block, blocks)
        _check_names("activation", self.activation, tuple(ACTIVATIONS))
        return self

    def choices(self) -> dict[str, float]:
        """Number of options per choice (``inf`` for a real range).

        Example:
            >>> SearchSpace(family="mlp", depth=[1, 2]).choices()["depth"]
            2
        """
        out = {}
        for name in FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = len(value) if isinstance(value, list) else value.size()
        return out

    def check_not_constant(self) -> SearchSpace:
        """Raise a :class:`SlimkitError` when nothing is left to choose."""
        if all(n <= 1 for n in self.choices().values()):
            raise SlimkitError(
                "constant search space: every choice has a single option, so there is "
                f"nothing to search; give two or more options to one of {', '.join(FIELDS)}"
            )
        return self

    def sample(self, trial: Any) -> Candidate:
        """Draw one candidate through an Optuna trial (or ``optuna.trial.FixedTrial``)."""
        depth = _suggest(trial, "depth", self.depth)
        per_layer = [
            {
                "width": _suggest(trial, f"width_{i}", self.width),
                "block": _suggest(trial, f"block_{i}", self.block),
            }
            for i in range(depth)
        ]
        arch: dict[str, Any] = {
            "activation": _suggest(trial, "activation", self.activation),
            "dropout": _suggest(trial, "dropout", self.dropout),
        }
        if self.family == "cnn":
            for i, layer in enumerate(per_layer):
                layer["kernel"] = _suggest(trial, f"kernel_{i}", self.kernel)
            arch.update(
                stages=per_layer,
                hidden=_suggest(trial, "hidden", self.hidden),
                head=_suggest(trial, "head", self.head),
            )
        else:
            arch["layers"] = per_layer
        return Candidate(
            family=self.family,
            arch=arch,
            lr=_suggest(trial, "lr", self.lr),
            batch_size=_suggest(trial, "batch_size", self.batch_size),
        )

    @classmethod
    def parse(cls, values: Any, source: str = "search space") -> SearchSpace:
        """Validate ``values`` (a mapping); any problem is one :class:`SlimkitError` line.

        Example:
            >>> SearchSpace.parse({"family": "cnn", "width": []})
            Traceback (most recent call last):
            ...
            slimkit.errors.SlimkitError: search space: width: lists no options; give at least one
        """
        if not values:
            raise SlimkitError(f"empty {source}: it declares no choices")
        if not isinstance(values, dict):
            raise SlimkitError(
                f"{source}: expected a mapping of choices, got {type(values).__name__}"
            )
        try:
            return cls(**values).check_not_constant()
        except ValidationError as exc:
            errors = exc.errors()
            # A choice is a list or a range: report the branch the input meant, not the mismatch.
            err = next((e for e in errors if not e["type"].endswith("_type")), errors[0])
            where = str(err["loc"][0]) if err["loc"] else ""
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = f"unknown key (known: family, {', '.join(FIELDS)})"
            raise SlimkitError(f"{source}: {where or 'space'}: {message}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Read a space from a YAML file (safe loader; nothing in it is executed).

        Example:
            >>> import tempfile, pathlib
            >>> f = pathlib.Path(tempfile.mkdtemp()) / "s.yaml"
            >>> _ = f.write_text("family: mlp\\ndepth: [1, 2]\\n")
            >>> SearchSpace.from_yaml(f).depth
            [1, 2]
        """
        path = Path(path)
        if not path.is_file():
            raise SlimkitError(f"search space file {path} not found")
        try:
            values = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise SlimkitError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        return cls.parse(values, str(path))


def _check_lower(name: str, value: list[float] | IntRange | FloatRange) -> None:
    low, exclusive = LOWER[name]
    smallest = min(value) if isinstance(value, list) else value.low
    if smallest < low or (exclusive and smallest == low):
        raise ValueError(f"values must be {'>' if exclusive else '>='} {low}, got {smallest}")
    if name == "dropout":
        largest = max(value) if isinstance(value, list) else value.high
        if largest >= 1:
            raise ValueError(f"dropout must be below 1, got {largest}")


def _check_names(name: str, values: list[str], known: tuple[str, ...]) -> None:
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ValueError(f"{name}: unknown option {unknown[0]!r}; known: {', '.join(known)}")


def _suggest(trial: Any, name: str, choice: list[Any] | IntRange | FloatRange) -> Any:
    # A fixed choice is not a parameter: the trial's parameters are exactly what was searched.
    if isinstance(choice, list) and len(choice) == 1:
        return choice[0]
    if not isinstance(choice, list) and choice.low == choice.high:
        return choice.low
    if isinstance(choice, IntRange):
        return trial.suggest_int(name, choice.low, choice.high, step=choice.step, log=choice.log)
    if isinstance(choice, FloatRange):
        return trial.suggest_float(name, choice.low, choice.high, log=choice.log)
    return trial.suggest_categorical(name, choice)


BUILTIN: dict[str, SearchSpace] = {
    # Fully connected nets for any data: up to three hidden layers.
    "mlp": SearchSpace(
        family="mlp",
        depth=[1, 2, 3],
        width=[32, 64, 128, 256, 512],
        block=["plain", "bn"],
        activation=["relu", "gelu", "silu"],
        dropout=[0.0, 0.1, 0.2, 0.3],
        lr=FloatRange(low=3e-4, high=1e-2, log=True),
        batch_size=[32, 64, 128],
    ),
    # CNNs for image data: one to three stages of plain, depthwise-separable or residual blocks.
    "cnn": SearchSpace(
        family="cnn",
        depth=[1, 2, 3],
        width=[8, 16, 24, 32, 48, 64],
        kernel=[3, 5],
        block=["conv", "dwsep", "residual"],
        activation=["relu", "gelu", "silu", "hardswish"],
        dropout=[0.0, 0.1, 0.2, 0.3],
        hidden=[0, 32, 64, 128],
        head=["gap", "flatten"],
        lr=FloatRange(low=5e-4, high=1e-2, log=True),
        batch_size=[32, 64, 128],
    ),
}


def load_space(spec: str | Path) -> SearchSpace:
    """A built-in space by name (``mlp``, ``cnn``) or a YAML file.

    Example:
        >>> load_space("cnn").family
        'cnn'
    """
    if str(spec) in BUILTIN:
        return BUILTIN[str(spec)]
    if Path(spec).suffix.lower() not in (".yaml", ".yml"):
        raise SlimkitError(
            f"unknown search space {str(spec)!r}; give {' or '.join(BUILTIN)} or a .yaml file"
        )
    return SearchSpace.from_yaml(spec)
