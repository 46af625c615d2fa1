"""Training settings, validated at the door."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainConfig(BaseModel):
    """How to train: optimiser, schedule, regularisation, early stopping and seed.

    Example:
        >>> TrainConfig(epochs=5, optimizer="sgd", lr=0.1).momentum
        0.9
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=0, description="passes over the training split")
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    step_every: int = Field(10, ge=1, description="epochs between LR drops (schedule=step)")
    gamma: float = Field(0.1, gt=0, le=1, description="LR factor per drop (schedule=step)")
    patience: int | None = Field(
        None,
        ge=1,
        description="stop after this many epochs "
        "without a better validation metric; None trains every epoch",
    )
    jitter: int = Field(0, ge=0, le=8, description="random shifts of up to this many pixels")
    seed: int = 0

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> TrainConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer 'sgd' with momentum > 0")
        return self
