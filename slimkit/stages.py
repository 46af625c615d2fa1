"""Imports every module that registers a stage, so the stage registry is complete.

A new method adds its module's name here: one line.
"""

import importlib

STAGE_MODULES = (
    "slimkit.train.stages",  # train, finetune
    "slimkit.export",  # export
    "slimkit.prune.stage",  # prune
    "slimkit.quant.stage",  # quantize
    "slimkit.distill.stage",  # distill
    "slimkit.cluster.stage",  # cluster
    "slimkit.lowrank.stage",  # factorize
)

for _module in STAGE_MODULES:
    importlib.import_module(_module)
