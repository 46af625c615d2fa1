"""Settings of a neural architecture search, validated at the door."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slimkit.errors import SlimkitError
from slimkit.search.objectives import DIRECTIONS, parse_objectives
from slimkit.search.pruning import PrunerName
from slimkit.search.storage import GRACE_S, HEARTBEAT_S, MAX_RETRY


class NasConfig(BaseModel):
    """How to search: objectives, strategy, early stopping, budget, trial training and choice.

    The budget is ``trials`` (finished trials of the study, across workers and resumes) and/or
    ``timeout`` (seconds of searching in this process); a budget of zero is refused.

    Example:
        >>> NasConfig(objectives="metric,latency", sampler="nsga2", trials=30).directions
        ['maximize', 'minimize']
        >>> NasConfig.parse(trials=0)
        Traceback (most recent call last):
        ...
        slimkit.errors.SlimkitError: trials: a budget of zero trials runs nothing; give 1 or more
    """

    model_config = ConfigDict(extra="forbid")

    objectives: list[str] = Field(["metric"], description="metric, latency, params, macs, bytes")
    sampler: Literal["random", "tpe", "nsga2"] = "tpe"
    pruner: PrunerName = "median"
    trials: int | None = Field(20, description="stop at this many finished trials")
    timeout: float | None = Field(None, description="seconds of searching in this process")
    epochs: int = Field(5, ge=1, description="brief training of each candidate")
    retrain_epochs: int = Field(20, ge=1, description="full training of the chosen candidate")
    train_subset: int | None = Field(None, ge=10, description="training examples per trial")
    val_subset: int | None = Field(None, ge=10, description="validation examples per trial")
    max_params: int | None = Field(None, ge=1, description="larger candidates are not trained")
    latency_batch: int = Field(1, ge=1, description="batch size of the latency objective")
    threads: int = Field(2, ge=1, description="threads for latency measurement")
    tolerance: float = Field(
        0.0, ge=0, description="choose the cheapest front member this close to the best metric"
    )
    seed: int = 0
    heartbeat_s: int = Field(HEARTBEAT_S, ge=1)
    grace_s: int = Field(GRACE_S, ge=2)
    max_retry: int = Field(MAX_RETRY, ge=0)

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, value: Any) -> list[str]:
        try:
            return parse_objectives(value)
        except SlimkitError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("trials")
    @classmethod
    def _trials(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            amount = "zero" if value == 0 else f"{value}"
            raise ValueError(f"a budget of {amount} trials runs nothing; give 1 or more")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            amount = "zero" if value == 0 else f"{value:g}"
            raise ValueError(f"a budget of {amount} seconds runs nothing; give more than 0")
        return value

    @model_validator(mode="after")
    def _has_budget(self) -> NasConfig:
        if self.trials is None and self.timeout is None:
            raise ValueError("no budget: give trials, a timeout or both")
        if self.grace_s <= self.heartbeat_s:
            raise ValueError("grace_s must exceed heartbeat_s")
        return self

    @property
    def directions(self) -> list[str]:
        """Optuna's direction of each objective, in order."""
        return [DIRECTIONS[name] for name in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @classmethod
    def parse(cls, **values: Any) -> NasConfig:
        """Validate settings; a bad one is one :class:`SlimkitError` line naming it."""
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            message = str(err["msg"]).removeprefix("Value error, ")
            raise SlimkitError(f"{where + ': ' if where else ''}{message}") from None
