"""The stage contract: one compression or training step, registered by name.

A stage module defines a pydantic ``Config`` (unknown keys are errors) and a ``run`` that takes
the current model and returns the next one. Registering it with ``@STAGES.register("kind")``
makes it usable from recipes, the Python API and the demo, with checkpointing and resume for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel
from torch import nn

from slimkit.data import Dataset
from slimkit.registry import Registry


@dataclass
class StageContext:
    """What a stage may use besides the model: data, folders, seed, threads."""

    data: Dataset
    out_dir: Path
    stage_dir: Path
    seed: int = 0
    threads: int = 2
    quiet: bool | None = None
    artifact: Path | None = None  # a deployable file a stage wrote (export)
    info: dict[str, Any] = field(default_factory=dict)  # extra facts for the report


class Stage(ABC):
    """Base class of every stage. Subclasses set ``Config`` and implement :meth:`run`."""

    Config: ClassVar[type[BaseModel]]
    #: True for stages that produce the uncompressed baseline (``train``).
    makes_baseline: ClassVar[bool] = False

    def __init__(self, config: BaseModel) -> None:
        self.config = config

    @abstractmethod
    def run(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        """Return the model after this stage (may be ``model`` itself, changed in place)."""


STAGES: Registry[type[Stage]] = Registry("stage")
