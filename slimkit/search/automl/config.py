"""AutoML settings, validated at the door: a bad value is a :class:`SlimkitError` naming it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from slimkit.errors import SlimkitError

FAMILIES = ("linear", "svm", "knn", "forest", "hgb", "mlp")
"""Model families searched: logistic regression, SVC, k-NN, random / extra trees,
HistGradientBoosting and a multi-layer perceptron (all scikit-learn)."""


class AutoMLConfig(BaseModel):
    """How to search: time budget, families, cross-validation, ensemble, seed and cores.

    Example:
        >>> AutoMLConfig(budget=30).families
        ['linear', 'svm', 'knn', 'forest', 'hgb', 'mlp']
        >>> AutoMLConfig(budget=30, families=["svm", "knn"], ensemble=False).folds
        5
    """

    model_config = ConfigDict(extra="forbid")

    budget: float = Field(description="wall-clock seconds for the whole run, refit included")
    families: list[str] = Field(default_factory=lambda: list(FAMILIES))
    folds: int = Field(5, ge=2, le=20, description="stratified k-fold splits, shared by trials")
    ensemble: bool = Field(True, description="try a soft-voting ensemble of the best candidates")
    ensemble_size: int = Field(8, ge=2, le=50, description="candidates the ensemble draws from")
    seed: int = Field(0, ge=0)
    n_jobs: int = Field(2, ge=1, description="worker processes; folds of a trial run in parallel")
    max_trial_seconds: float | None = Field(
        None, gt=0, description="stop a single slow trial after this long (default budget / 4)"
    )
    n_trials: int | None = Field(None, ge=1, description="stop after this many trials as well")

    @field_validator("budget")
    @classmethod
    def _positive_budget(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"must be a positive number of seconds, got {value}")
        return value

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"is empty; name at least one of {', '.join(FAMILIES)}")
        unknown = [name for name in value if name not in FAMILIES]
        if unknown:
            raise ValueError(
                f"unknown family {unknown[0]!r}; valid families: {', '.join(FAMILIES)}"
            )
        return list(dict.fromkeys(value))  # duplicates would only skew the sampler

    @property
    def trial_limit(self) -> float:
        """Seconds after which one trial is stopped and recorded failed."""
        return self.max_trial_seconds or max(2.0, self.budget / 4)


def make_config(
    config: AutoMLConfig | dict[str, Any] | None = None, **overrides: Any
) -> AutoMLConfig:
    """An :class:`AutoMLConfig` from a config, a dict or keywords; errors become SlimkitError.

    Example:
        >>> make_config(budget=10, seed=3).seed
        3
        >>> make_config(budget=0)
        Traceback (most recent call last):
        ...
        slimkit.errors.SlimkitError: automl budget: must be a positive number of seconds, got 0.0
    """
    values = config.model_dump() if isinstance(config, AutoMLConfig) else dict(config or {})
    values.update(overrides)
    try:
        return AutoMLConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "config"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise SlimkitError(f"automl {where}: {message}") from None
