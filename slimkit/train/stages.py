"""The ``train`` and ``finetune`` stages."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from slimkit.recipe.stage import STAGES, Stage, StageContext
from slimkit.train.config import TrainConfig
from slimkit.train.loop import fit


@STAGES.register("train")
class TrainStage(Stage):
    """Train the model from its current weights; the result is the uncompressed baseline."""

    Config = TrainConfig
    makes_baseline = True

    def run(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        result = fit(model, ctx.data, self.config, quiet=ctx.quiet)
        ctx.info.update(epochs=result.epochs_run, best_val=result.best_val)
        return model


class FinetuneConfig(TrainConfig):
    """Training settings with fine-tuning defaults: a few epochs at a small learning rate.

    Example:
        >>> config = FinetuneConfig()
        >>> config.epochs, config.lr
        (3, 0.0001)
    """

    epochs: int = Field(3, ge=0)
    lr: float = Field(1e-4, gt=0)


@STAGES.register("finetune")
class FinetuneStage(TrainStage):
    """Recover accuracy after a compression stage (same loop, gentler defaults)."""

    Config = FinetuneConfig
    makes_baseline = False
