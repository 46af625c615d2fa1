"""The ``factorize`` stage: truncated SVD of layers, then optional fine-tuning."""

from __future__ import annotations

from torch import nn

from slimkit.lowrank.svd import FactorizeConfig, factorize
from slimkit.recipe.stage import STAGES, Stage, StageContext
from slimkit.train import TrainConfig, fit


class FactorizeStageConfig(FactorizeConfig):
    """Factorization settings plus optional fine-tuning.

    Example:
        >>> FactorizeStageConfig(rank=8, finetune={"epochs": 2}).finetune.epochs
        2
    """

    finetune: TrainConfig | None = None


@STAGES.register("factorize")
class FactorizeStage(Stage):
    """Replace layers by low-rank pairs, then fine-tune to recover accuracy."""

    Config = FactorizeStageConfig

    def run(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        ctx.info["factorized"] = factorize(model, self.config)
        if self.config.finetune is not None:
            fit(model, ctx.data, self.config.finetune, quiet=ctx.quiet)
        return model
