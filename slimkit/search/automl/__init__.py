"""AutoML for classical models: a joint search over scikit-learn model families, their
hyperparameters and the preprocessing, by cross-validation under a time budget.

Optuna (Akiba et al. 2019) runs the study with its seeded TPE sampler (Bergstra et al. 2011);
an optional soft-voting ensemble of the best candidates is built by greedy ensemble selection
as in Auto-sklearn (Feurer et al. 2015) and kept only when its cross-validated score beats the
best single candidate. Fitted pipelines are saved with skops, never pickle.

Example:
    >>> from slimkit.search.automl import AutoMLConfig, automl, load_table
    >>> t = load_table("iris")
    >>> result = automl(t.x, t.y, AutoMLConfig(budget=10))  # doctest: +SKIP
    >>> result.leaderboard[0]["family"]  # doctest: +SKIP
    'svm'
"""

from slimkit.search.automl.config import FAMILIES, AutoMLConfig, make_config
from slimkit.search.automl.data import BUNDLED, DATA_NAMES, Table, load_table, split_table
from slimkit.search.automl.persist import load_pipeline, save_pipeline
from slimkit.search.automl.report import run_automl
from slimkit.search.automl.search import AutoMLResult, automl

__all__ = [
    "BUNDLED",
    "DATA_NAMES",
    "FAMILIES",
    "AutoMLConfig",
    "AutoMLResult",
    "Table",
    "automl",
    "load_pipeline",
    "load_table",
    "make_config",
    "run_automl",
    "save_pipeline",
    "split_table",
]
