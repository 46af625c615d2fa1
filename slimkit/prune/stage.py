"""The ``prune`` stage: :func:`slimkit.prune.prune` in a recipe.

Example recipe section (Han et al. 2015's iterative schedule at 92% sparsity)::

    - kind: prune
      sparsity: 0.92
      schedule: iterative
      iterations: 3
      retrain: {epochs: 4, lr: 0.0003}
"""

from __future__ import annotations

from torch import nn

from slimkit.prune.api import prune
from slimkit.prune.config import PruneConfig
from slimkit.prune.masks import finalize
from slimkit.prune.sensitivity import plot_sensitivity
from slimkit.recipe.stage import STAGES, Stage, StageContext


@STAGES.register("prune")
class PruneStage(Stage):
    """Prune (and retrain) the model; masks are always baked in, so the stage checkpoints as a
    plain model. A sensitivity allocation also writes ``sensitivity.png`` into the stage folder.
    """

    Config = PruneConfig

    def run(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        result = prune(model, self.config, ctx.data, quiet=ctx.quiet)
        ctx.info.update(prune=result.summary())
        if result.sensitivity is not None:
            path = plot_sensitivity(
                result.sensitivity, ctx.stage_dir / "sensitivity.png", result.allocation
            )
            ctx.info["sensitivity_plot"] = str(path.relative_to(ctx.out_dir))
        return finalize(result.model)
