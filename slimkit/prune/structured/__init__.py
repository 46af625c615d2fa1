"""Structured pruning: dependency groups traced with torch.fx, and channel removal."""

from slimkit.prune.structured.core import CRITERIA, StructuredResult, structured_prune
from slimkit.prune.structured.graph import DependencyGraph, dependency_graph

__all__ = [
    "CRITERIA",
    "DependencyGraph",
    "StructuredResult",
    "dependency_graph",
    "structured_prune",
]
