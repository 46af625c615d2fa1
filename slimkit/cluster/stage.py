"""The ``cluster`` stage: share weights, fine-tune the shared values, bake them in."""

from __future__ import annotations

from torch import nn

from slimkit.cluster.kmeans import ClusterConfig, cluster, finalize
from slimkit.recipe.stage import STAGES, Stage, StageContext
from slimkit.train import TrainConfig, fit


class ClusterStageConfig(ClusterConfig):
    """Weight-sharing settings plus optional fine-tuning of the shared values.

    Example:
        >>> ClusterStageConfig(bits=4, finetune={"epochs": 1}).finetune.epochs
        1
    """

    finetune: TrainConfig | None = None


@STAGES.register("cluster")
class ClusterStage(Stage):
    """Weight sharing (Han et al. 2016): k-means per layer, then centroid fine-tuning."""

    Config = ClusterStageConfig

    def run(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        cluster(model, self.config)
        if self.config.finetune is not None:
            fit(model, ctx.data, self.config.finetune, quiet=ctx.quiet)
        return finalize(model)
