"""Models: the zoo registry, architecture specs, checkpoints and loading of user models."""

from slimkit.models import zoo  # noqa: F401  (registers the zoo)
from slimkit.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from slimkit.models.loading import OnnxModule, load_model
from slimkit.models.registry import MODELS
from slimkit.models.spec import (
    ModelSpec,
    build_model,
    model_factory,
    model_from_spec,
    spec_of,
)

__all__ = [
    "MODELS",
    "ModelSpec",
    "OnnxModule",
    "build_model",
    "load_checkpoint",
    "load_model",
    "model_factory",
    "model_from_spec",
    "read_checkpoint",
    "save_checkpoint",
    "spec_of",
]
