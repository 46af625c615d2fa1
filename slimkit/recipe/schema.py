"""The recipe file: model, data and an ordered list of stages, validated with pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slimkit.errors import SlimkitError
from slimkit.recipe.stage import STAGES, Stage


class ModelSection(BaseModel):
    """A zoo name or ``package.module:factory`` (with ``kwargs``), or a model ``path``.

    Example:
        >>> section = ModelSection(name="mlp")
        >>> section.path, section.kwargs
        (None, {})
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    path: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of 'name' (zoo or import path) or 'path' (file)")
        return self


class DataSection(BaseModel):
    """A data set name, its folder and how to split it.

    Example:
        >>> data = DataSection(name="digits")
        >>> data.val_fraction, data.test_fraction, data.seed
        (0.1, 0.2, 0)
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    dir: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


class StageSection(BaseModel):
    """One stage: its ``kind`` (registered name), a display ``name`` and its validated config.

    Example:
        >>> from slimkit.train import TrainConfig
        >>> section = StageSection(kind="train", name="warmup", config=TrainConfig(epochs=1))
        >>> type(section.build()).__name__
        'TrainStage'
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    kind: str
    name: str
    config: BaseModel

    def build(self) -> Stage:
        return STAGES.get(self.kind)(self.config)


class Recipe(BaseModel):
    """A validated recipe.

    Example:
        >>> recipe = Recipe.from_dict({"model": {"name": "mlp"}, "data": {"name": "digits"},
        ...                            "stages": [{"kind": "train", "epochs": 1}]})
        >>> recipe.stages[0].config.epochs
        1
    """

    model_config = ConfigDict(extra="forbid")

    model: ModelSection
    data: DataSection
    stages: list[StageSection]
    seed: int = 0
    threads: int = Field(2, ge=1)

    @classmethod
    def from_dict(cls, raw: Any, base_dir: Path | None = None) -> Recipe:
        """Validate a parsed recipe; relative paths resolve against ``base_dir``."""
        if not isinstance(raw, dict):
            raise SlimkitError("recipe: expected a mapping with model, data and stages")
        raw = dict(raw)
        stages_raw = raw.get("stages")
        if not isinstance(stages_raw, list) or not stages_raw:
            raise SlimkitError("recipe: 'stages' must be a non-empty list")
        raw["stages"] = [_stage(item, i) for i, item in enumerate(stages_raw)]
        _check_unique_names(raw["stages"])
        try:
            recipe = cls.model_validate(raw)
        except ValidationError as exc:
            raise SlimkitError(f"recipe: {_first_error(exc)}") from None
        if base_dir is not None:
            recipe = recipe._resolve(base_dir)
        return recipe

    @classmethod
    def from_file(cls, path: str | Path) -> Recipe:
        """Read and validate a YAML recipe (never executes anything in it)."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise SlimkitError(f"cannot read recipe {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SlimkitError(f"recipe {path} is not valid YAML: {exc}".splitlines()[0]) from None
        return cls.from_dict(raw, base_dir=path.resolve().parent)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stage configs flattened back as in the file)."""
        out = self.model_dump(exclude={"stages"})
        out["stages"] = [
            {"kind": s.kind, "name": s.name, **s.config.model_dump()} for s in self.stages
        ]
        return out

    def _resolve(self, base: Path) -> Recipe:
        model, data = self.model, self.data
        if model.path is not None:
            model = model.model_copy(update={"path": str(base / model.path)})
        if data.dir is not None:
            data = data.model_copy(update={"dir": str(base / data.dir)})
        stages = [s.model_copy(update={"config": _resolve_paths(s.config, base)})
                  for s in self.stages]  # fmt: skip
        return self.model_copy(update={"model": model, "data": data, "stages": stages})


def _resolve_paths(config: BaseModel, base: Path) -> BaseModel:
    """Resolve the stage settings marked ``json_schema_extra={"path": True}`` against ``base``."""
    updates = {}
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        marked = isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("path")
        if marked and isinstance(value, str):
            updates[name] = str(base / value)  # an absolute value stays as it is
    return config.model_copy(update=updates)


def _stage(item: Any, index: int) -> dict[str, Any]:
    if not isinstance(item, dict) or "kind" not in item:
        raise SlimkitError(
            f"recipe: stages[{index}] needs a 'kind' (known: {', '.join(STAGES.names())})"
        )
    settings = dict(item)
    kind = str(settings.pop("kind"))
    name = str(settings.pop("name", kind))
    stage_cls = STAGES.get(kind)
    try:
        config = stage_cls.Config.model_validate(settings)
    except ValidationError as exc:
        raise SlimkitError(f"recipe: stages[{index}] ({kind}): {_first_error(exc)}") from None
    return {"kind": kind, "name": name, "config": config}


def _check_unique_names(stages: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for stage in stages:
        if stage["name"] in seen:
            raise SlimkitError(
                f"recipe: two stages are named {stage['name']!r}; give each a distinct 'name'"
            )
        seen.add(stage["name"])


def _first_error(exc: ValidationError) -> str:
    """One line for the first problem, naming the key (typos show as 'unknown key')."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "recipe"
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    if err["type"] == "missing":
        return f"missing key {where!r}"
    return f"{where}: {err['msg']}"
