"""The ``distill`` recipe stage: train the current model as the student of a saved teacher."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from torch import nn

from slimkit.distill.api import distill
from slimkit.distill.config import DistillConfig
from slimkit.distill.teacher import load_teacher
from slimkit.measure import evaluate
from slimkit.recipe.stage import STAGES, Stage, StageContext


class DistillStageConfig(DistillConfig):
    """Distillation settings plus the teacher's file (in a recipe file, relative to its folder).

    Example:
        >>> DistillStageConfig(teacher="teacher.safetensors", temperature=20).alpha
        0.9
    """

    teacher: str = Field(
        description="teacher model file or Hugging Face folder",
        json_schema_extra={"path": True},  # recipes resolve it against the recipe's folder
    )


@STAGES.register("distill")
class DistillStage(Stage):
    """Distill the teacher named in the config into the current model (Hinton et al. 2015).

    Example recipe stage::

        - kind: distill
          teacher: teacher.safetensors
          temperature: 20
          alpha: 0.9
          epochs: 10
          optimizer: sgd
          lr: 0.05
    """

    Config = DistillStageConfig

    def run(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        teacher = load_teacher(Path(self.config.teacher))
        settings = DistillConfig(**self.config.model_dump(exclude={"teacher"}))
        result = distill(model, teacher, ctx.data, settings, quiet=ctx.quiet)
        ctx.info.update(
            epochs=result.epochs_run,
            best_val=result.best_val,
            teacher_metric=round(evaluate(teacher, ctx.data.test), 6),
        )
        return model
