"""Recipes: a validated YAML list of stages, run with checkpoints and resume."""

from slimkit.recipe.stage import STAGES, Stage, StageContext  # isort: skip
from slimkit import stages as _stages  # noqa: F401  (fills the stage registry)
from slimkit.recipe.pipeline import load_recipe_inputs, run_recipe
from slimkit.recipe.schema import Recipe

__all__ = ["STAGES", "Recipe", "Stage", "StageContext", "load_recipe_inputs", "run_recipe"]
