"""The joint search space: model family, its hyperparameters and the preprocessing.

Define-by-run (Optuna, Akiba et al. 2019): the family is sampled first and only that family's
hyperparameters follow, so TPE (Bergstra et al. 2011) models each branch separately. Scaling is
searched only for families that care about feature scales, imputation only when the numeric
columns have missing values; text columns are always one-hot encoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sklearn.base import ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler
from sklearn.svm import SVC

SCALERS = {"none": None, "standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}
IMPUTERS = ("mean", "median", "most_frequent")
TREE_FAMILIES = frozenset({"forest", "hgb"})  # split on thresholds: scaling changes nothing


@dataclass(frozen=True)
class SpaceInfo:
    """What the space needs to know about the data.

    Example:
        >>> info = SpaceInfo([0, 1], [], has_missing=False, min_train_rows=40, probability=False)
        >>> estimator({"family": "svm", "C": 1.0, "kernel": "linear"}, info).probability
        False
    """

    numeric: list[int]
    categorical: list[int]
    has_missing: bool
    min_train_rows: int  # rows in the smallest training fold: caps k of k-NN
    probability: bool = True  # SVC must give probabilities for a soft-voting ensemble


def suggest(trial: Any, families: list[str], info: SpaceInfo) -> dict[str, Any]:
    """Sample one candidate's settings from an Optuna trial (flat dict, family first).

    Example:
        >>> import optuna
        >>> info = SpaceInfo([0, 1], [], False, 100)
        >>> trial = optuna.create_study().ask()
        >>> sorted(suggest(trial, ["knn"], info))
        ['family', 'n_neighbors', 'p', 'scaler', 'weights']
    """
    family = trial.suggest_categorical("family", families)
    params: dict[str, Any] = {"family": family}
    if family not in TREE_FAMILIES:
        params["scaler"] = trial.suggest_categorical("scaler", list(SCALERS))
    if info.has_missing:
        params["impute"] = trial.suggest_categorical("impute", list(IMPUTERS))
    for name, value in SUGGEST[family](trial, info).items():
        params[name] = value
    return params


def _linear(trial: Any, info: SpaceInfo) -> dict[str, Any]:
    return {"C": trial.suggest_float("linear.C", 1e-4, 1e4, log=True)}


def _svm(trial: Any, info: SpaceInfo) -> dict[str, Any]:
    out = {
        "C": trial.suggest_float("svm.C", 1e-2, 1e4, log=True),
        "kernel": trial.suggest_categorical("svm.kernel", ["rbf", "linear"]),
    }
    if out["kernel"] == "rbf":
        out["gamma"] = trial.suggest_float("svm.gamma", 1e-5, 10.0, log=True)
    return out


def _knn(trial: Any, info: SpaceInfo) -> dict[str, Any]:
    high = max(1, min(50, info.min_train_rows - 1))
    return {
        "n_neighbors": trial.suggest_int("knn.n_neighbors", 1, high, log=True),
        "weights": trial.suggest_categorical("knn.weights", ["uniform", "distance"]),
        "p": trial.suggest_int("knn.p", 1, 2),
    }


def _forest(trial: Any, info: SpaceInfo) -> dict[str, Any]:
    return {
        "extra": trial.suggest_categorical("forest.extra", [False, True]),
        "n_estimators": trial.suggest_int("forest.n_estimators", 50, 500, log=True),
        "max_features": trial.suggest_float("forest.max_features", 0.05, 1.0),
        "min_samples_leaf": trial.suggest_int("forest.min_samples_leaf", 1, 10, log=True),
        "criterion": trial.suggest_categorical("forest.criterion", ["gini", "entropy"]),
    }


def _hgb(trial: Any, info: SpaceInfo) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("hgb.learning_rate", 0.01, 0.5, log=True),
        "max_iter": trial.suggest_int("hgb.max_iter", 50, 500, log=True),
        "max_leaf_nodes": trial.suggest_int("hgb.max_leaf_nodes", 4, 64, log=True),
        "min_samples_leaf": trial.suggest_int("hgb.min_samples_leaf", 1, 50, log=True),
        "l2_regularization": trial.suggest_float("hgb.l2_regularization", 1e-8, 10.0, log=True),
        "max_features": trial.suggest_float("hgb.max_features", 0.2, 1.0),
    }


def _mlp(trial: Any, info: SpaceInfo) -> dict[str, Any]:
    return {
        "layers": trial.suggest_int("mlp.layers", 1, 2),
        "width": trial.suggest_int("mlp.width", 16, 256, log=True),
        "alpha": trial.suggest_float("mlp.alpha", 1e-6, 1e-1, log=True),
        "learning_rate_init": trial.suggest_float("mlp.learning_rate_init", 1e-4, 3e-2, log=True),
        "activation": trial.suggest_categorical("mlp.activation", ["relu", "tanh"]),
    }


SUGGEST: dict[str, Callable[[Any, SpaceInfo], dict[str, Any]]] = {
    "linear": _linear, "svm": _svm, "knn": _knn, "forest": _forest, "hgb": _hgb, "mlp": _mlp,
}  # fmt: skip

# Library defaults, tried first (Optuna enqueue_trial): a safe start when the budget is short.
DEFAULTS: dict[str, dict[str, Any]] = {
    "linear": {"scaler": "standard", "linear.C": 1.0},
    "svm": {"scaler": "standard", "svm.C": 1.0, "svm.kernel": "rbf", "svm.gamma": 0.05},
    "knn": {"scaler": "standard", "knn.n_neighbors": 5, "knn.weights": "uniform", "knn.p": 2},
    "forest": {"forest.extra": False, "forest.n_estimators": 100, "forest.max_features": 0.3,
               "forest.min_samples_leaf": 1, "forest.criterion": "gini"},
    "hgb": {"hgb.learning_rate": 0.1, "hgb.max_iter": 100, "hgb.max_leaf_nodes": 31,
            "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 1e-8, "hgb.max_features": 1.0},
    "mlp": {"scaler": "standard", "mlp.layers": 1, "mlp.width": 100, "mlp.alpha": 1e-4,
            "mlp.learning_rate_init": 1e-3, "mlp.activation": "relu"},
}  # fmt: skip


def estimator(params: dict[str, Any], info: SpaceInfo, seed: int = 0) -> ClassifierMixin:
    """The unfitted classifier for a candidate's settings.

    Example:
        >>> estimator({"family": "knn", "n_neighbors": 3, "weights": "uniform", "p": 2},
        ...           SpaceInfo([0], [], False, 50))
        KNeighborsClassifier(n_neighbors=3)
    """
    return BUILD[params["family"]](params, info, seed)


def _model_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in ("family", "scaler", "impute")}


def _build_linear(params: dict[str, Any], info: SpaceInfo, seed: int) -> ClassifierMixin:
    return LogisticRegression(C=params["C"], max_iter=2000, random_state=seed)


def _build_svm(params: dict[str, Any], info: SpaceInfo, seed: int) -> ClassifierMixin:
    extra = {"gamma": params["gamma"]} if params["kernel"] == "rbf" else {}
    return SVC(C=params["C"], kernel=params["kernel"], probability=info.probability,
               random_state=seed, cache_size=500, **extra)  # fmt: skip


def _build_knn(params: dict[str, Any], info: SpaceInfo, seed: int) -> ClassifierMixin:
    return KNeighborsClassifier(**_model_params(params))


def _build_forest(params: dict[str, Any], info: SpaceInfo, seed: int) -> ClassifierMixin:
    settings = _model_params(params)
    cls = ExtraTreesClassifier if settings.pop("extra") else RandomForestClassifier
    return cls(**settings, random_state=seed, n_jobs=1)  # parallelism is across folds


def _build_hgb(params: dict[str, Any], info: SpaceInfo, seed: int) -> ClassifierMixin:
    return HistGradientBoostingClassifier(**_model_params(params), random_state=seed)


def _build_mlp(params: dict[str, Any], info: SpaceInfo, seed: int) -> ClassifierMixin:
    hidden = (params["width"],) * params["layers"]
    return MLPClassifier(
        hidden_layer_sizes=hidden,
        alpha=params["alpha"],
        learning_rate_init=params["learning_rate_init"],
        activation=params["activation"],
        max_iter=300,
        random_state=seed,
    )


BUILD: dict[str, Callable[[dict[str, Any], SpaceInfo, int], ClassifierMixin]] = {
    "linear": _build_linear, "svm": _build_svm, "knn": _build_knn, "forest": _build_forest,
    "hgb": _build_hgb, "mlp": _build_mlp,
}  # fmt: skip


def preprocessor(params: dict[str, Any], info: SpaceInfo) -> ColumnTransformer:
    """Imputation and scaling of numeric columns, imputation and one-hot of text columns.

    The imputer is always there, so a pipeline fitted on complete data still accepts a missing
    value later; its strategy is searched only when the training data has missing values.

    Example:
        >>> info = SpaceInfo([0, 1], [2], True, 9)
        >>> ct = preprocessor({"family": "svm", "scaler": "robust"}, info)
        >>> [name for name, _, _ in ct.transformers]
        ['num', 'cat']
    """
    numeric: list[tuple[str, Any]] = [
        ("impute", SimpleImputer(strategy=params.get("impute", "median")))
    ]
    scaler = SCALERS[params.get("scaler", "none")]
    if scaler is not None:
        numeric.append(("scale", scaler()))
    parts: list[tuple[str, Any, list[int]]] = []
    if info.numeric:
        parts.append(("num", Pipeline(numeric), list(info.numeric)))
    if info.categorical:
        text = Pipeline([
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ])  # fmt: skip
        parts.append(("cat", text, list(info.categorical)))
    return ColumnTransformer(parts, remainder="drop")


def build_pipeline(params: dict[str, Any], info: SpaceInfo, seed: int = 0) -> Pipeline:
    """The unfitted Pipeline(preprocessing, classifier) for a candidate's settings.

    Example:
        >>> p = build_pipeline({"family": "linear", "scaler": "standard", "C": 1.0},
        ...                    SpaceInfo([0, 1], [], False, 50))
        >>> [name for name, _ in p.steps]
        ['prep', 'model']
    """
    return Pipeline(
        [("prep", preprocessor(params, info)), ("model", estimator(params, info, seed))]
    )
