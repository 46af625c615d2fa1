"""Imports every module that registers a stage, so the stage registry is complete.

A new method adds its module here: one line.
"""

from slimkit import export  # noqa: F401  (export)
from slimkit.cluster import stage as cluster_stage  # noqa: F401  (cluster)
from slimkit.lowrank import stage as lowrank_stage  # noqa: F401  (factorize)
from slimkit.train import stages  # noqa: F401  (train, finetune)
from slimkit.distill import stage  # noqa: F401  (distill)
