"""Search: neural architecture search (``slimkit nas``) and AutoML for classical models
(``slimkit automl``), both on Optuna.

NAS: declare a :class:`SearchSpace` (YAML or Python), pick objectives and a strategy in a
:class:`NasConfig`, and :func:`search` runs (or joins, or resumes) an Optuna study in any SQL
storage; :func:`run_nas` then retrains, measures and exports the chosen model (docs/nas.md).
AutoML: :func:`automl` searches scikit-learn families, hyperparameters and preprocessing by
cross-validation under a time budget (``slimkit.search.automl``, docs/automl.md).

Names are imported on first use, so the AutoML half (and its worker processes) never pays for
importing torch.
"""

from __future__ import annotations

from typing import Any

from slimkit.lazy import lazy_attribute

_API = {
    "BUILTIN": "slimkit.search.space",
    "Candidate": "slimkit.search.space",
    "SearchSpace": "slimkit.search.space",
    "load_space": "slimkit.search.space",
    "NasConfig": "slimkit.search.config",
    "SearchResult": "slimkit.search.nas",
    "search": "slimkit.search.nas",
    "hypervolume_2d": "slimkit.search.pareto",
    "pareto_front": "slimkit.search.pareto",
    "run_nas": "slimkit.search.run",
    "searched_cnn": "slimkit.search.arch",
    "searched_mlp": "slimkit.search.arch",
    "AutoMLConfig": "slimkit.search.automl",
    "automl": "slimkit.search.automl",
    "load_pipeline": "slimkit.search.automl",
    "run_automl": "slimkit.search.automl",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    return lazy_attribute(_API, __name__, name)
