"""Imports every module that registers a stage, so the stage registry is complete.

A new method adds its module here: one line.
"""

from slimkit import export  # noqa: F401  (export)
from slimkit.train import stages  # noqa: F401  (train, finetune)
