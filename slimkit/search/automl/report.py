"""One AutoML run end to end: held-out split, search, save, measure, report.json and figure."""

from __future__ import annotations

import importlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.search.automl.config import AutoMLConfig, make_config
from slimkit.search.automl.data import Table, split_table
from slimkit.search.automl.persist import save_pipeline
from slimkit.search.automl.search import AutoMLResult, automl
from slimkit.search.automl.space import SpaceInfo, build_pipeline

MODEL_FILE = "model.skops"
LATENCY_NOTE = "scikit-learn predict, one thread, median of repeated calls (no ONNX export)"


def run_automl(
    table: Table,
    out_dir: str | Path,
    config: AutoMLConfig | dict[str, Any] | None = None,
    *,
    test_fraction: float = 0.25,
    quiet: bool | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Split off a seeded held-out test set, search on the rest, write everything to ``out_dir``.

    Writes ``model.skops`` (the fitted pipeline), ``report.json``, ``report.md`` and
    ``leaderboard.png``; returns the report.

    Example:
        >>> from slimkit.search.automl.data import load_table
        >>> report = run_automl(load_table("iris"), "out", budget=10)  # doctest: +SKIP
        >>> report["result"]["metric"]  # doctest: +SKIP
        0.973684
    """
    from slimkit.report import build_report, save_json
    from slimkit.report.tables import to_markdown

    cfg = make_config(config, **overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = split_table(table, test_fraction, cfg.seed)
    result = automl(train.x, train.y, cfg, categorical=train.categorical, quiet=quiet)
    model_path = out / MODEL_FILE
    digest = save_pipeline(result.pipeline, model_path)
    measured = measure_pipeline(result.pipeline, test, model_path, relative_to=out)
    measured["artifact_sha256"] = digest
    report = build_report(
        {"data": table.name, "metric": "accuracy", "split": "test", "n": len(test.y)},
        default_baseline(train, test, cfg.seed),
        measured,
        [_stage(result, len(train.y))],
        threads=cfg.n_jobs,
        chosen=result.chosen,
        trials=result.trials,
        leaderboard=result.leaderboard,
        class_names=table.class_names,
        libraries=library_versions(),
    )
    save_json(report, out / "report.json")
    (out / "report.md").write_text(to_markdown(report))
    leaderboard_figure(result.leaderboard, out / "leaderboard.png", title=table.name)
    return report


def _stage(result: AutoMLResult, rows: int) -> dict[str, Any]:
    return {"name": "automl", "kind": "automl", "config": result.config.model_dump(),
            "metric": result.chosen["cv_mean"], "metric_split": f"{result.config.folds}-fold CV "
            f"on {rows} training rows", "seconds": result.seconds}  # fmt: skip


def measure_pipeline(
    pipeline: Any, test: Table, artifact: Path, relative_to: Path, threads: int = 1
) -> dict[str, Any]:
    """MEASUREMENT of a fitted pipeline: held-out accuracy, bytes on disk, predict latency.

    Example:
        >>> from slimkit.search.automl.data import load_table
        >>> m = measure_pipeline(pipe, test, Path("out/model.skops"), Path("out"))  # doctest: +SKIP
        >>> sorted(m["latency_ms"])  # doctest: +SKIP
        ['sklearn_b1', 'sklearn_b64']
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):  # OpenMP predictors crawl on a busy machine
        accuracy = float((pipeline.predict(test.x) == test.y).mean())
    return {
        "metric": round(accuracy, 6),
        "error": round(1 - accuracy, 6),
        "size_bytes": artifact.stat().st_size,
        "artifact": str(artifact.relative_to(relative_to)),
        "latency_ms": {
            f"sklearn_b{b}": predict_latency(pipeline, test.x, b, threads) for b in (1, 64)
        },
        "latency_runtime": LATENCY_NOTE,
    }


def predict_latency(pipeline: Any, x: np.ndarray, batch: int, threads: int = 1) -> float:
    """Median milliseconds of ``pipeline.predict`` on ``batch`` rows (test rows, repeated).

    Example:
        >>> from sklearn.dummy import DummyClassifier
        >>> m = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
        >>> predict_latency(m, np.zeros((3, 1)), 64) < 100
        True
    """
    from threadpoolctl import threadpool_limits

    rows = x[np.arange(batch) % len(x)]
    times: list[float] = []
    with threadpool_limits(limits=threads):
        pipeline.predict(rows)  # warm-up: lazy imports, caches
        stop = time.perf_counter() + 1.0
        while len(times) < 3 or (len(times) < 50 and time.perf_counter() < stop):
            start = time.perf_counter()
            pipeline.predict(rows)
            times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 4)


def default_baseline(train: Table, test: Table, seed: int = 0) -> dict[str, Any]:
    """The untuned reference: standard scaling plus logistic regression with default settings.

    Example:
        >>> from slimkit.search.automl.data import load_table
        >>> tr, te = split_table(load_table("wine"), 0.25, 0)
        >>> default_baseline(tr, te)["metric"] > 0.9
        True
    """
    from slimkit.search.automl.search import _fit

    info = SpaceInfo(train.numeric, train.categorical, train.has_missing, len(train.y))
    params = {"family": "linear", "scaler": "standard", "C": 1.0}
    pipeline = _fit(build_pipeline(params, info, seed), train.x, train.y)
    accuracy = float((pipeline.predict(test.x) == test.y).mean())
    return {"name": "logistic regression, defaults", "metric": round(accuracy, 6),
            "error": round(1 - accuracy, 6)}  # fmt: skip


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries an AutoML result depends on.

    Example:
        >>> sorted(library_versions())
        ['flaml', 'optuna', 'scikit-learn', 'skops']
    """
    out: dict[str, str | None] = {}
    for name, module in (("scikit-learn", "sklearn"), ("optuna", "optuna"), ("skops", "skops"),
                         ("flaml", "flaml")):  # fmt: skip
        try:
            out[name] = str(importlib.import_module(module).__version__)
        except Exception:  # not installed (flaml is a bench extra), or broken
            out[name] = None
    return out


def leaderboard_figure(leaderboard: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """CV score per trial by family with the best-so-far line, and the best score per family.

    Example:
        >>> import tempfile
        >>> rows = [{"trial": 0, "family": "svm", "cv_mean": 0.9, "state": "complete"},
        ...         {"trial": 1, "family": "knn", "cv_mean": None, "state": "failed"}]
        >>> leaderboard_figure(rows, Path(tempfile.mkdtemp()) / "lb.png").name
        'lb.png'
    """
    from slimkit.report.figures import plt, save_figure

    done = sorted(
        (r for r in leaderboard if r.get("cv_mean") is not None), key=lambda r: r["trial"]
    )
    families = sorted({r["family"] for r in leaderboard})
    colors = {f: plt.get_cmap("tab10")(i) for i, f in enumerate(families)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), width_ratios=[2, 1])
    for family in families:
        rows = [r for r in done if r["family"] == family]
        left.scatter([r["trial"] for r in rows], [r["cv_mean"] for r in rows], s=14,
                     color=colors[family], label=family, alpha=0.8)  # fmt: skip
    if done:
        best = np.maximum.accumulate([r["cv_mean"] for r in done])
        left.step([r["trial"] for r in done], best, where="post", color="black", lw=1,
                  label="best so far")  # fmt: skip
        low = np.percentile([r["cv_mean"] for r in done], 10)
        left.set_ylim(max(0.0, low - 0.02), min(1.0, best[-1] + 0.01) + 0.005)
    left.set_xlabel("trial")
    left.set_ylabel("cross-validated accuracy")
    left.set_title(f"AutoML search {title}".strip())
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="lower right")
    tops = {f: max((r["cv_mean"] for r in done if r["family"] == f), default=math.nan)
            for f in families}  # fmt: skip
    right.barh(families, [0 if math.isnan(v) else v for v in tops.values()],
               color=[colors[f] for f in families])  # fmt: skip
    finite = [v for v in tops.values() if not math.isnan(v)]
    if finite:
        right.set_xlim(max(0.0, min(finite) - 0.05), 1.0)
    right.set_xlabel("best CV accuracy")
    right.set_title("best per family")
    return save_figure(fig, path)


def config_summary(config: AutoMLConfig) -> str:
    """One line describing a config (for the CLI).

    Example:
        >>> config_summary(AutoMLConfig(budget=10))
        '10s, 6 families, 5-fold CV, ensemble on, seed 0, 2 workers'
    """
    return (f"{config.budget:g}s, {len(config.families)} families, {config.folds}-fold CV, "
            f"ensemble {'on' if config.ensemble else 'off'}, seed {config.seed}, "
            f"{config.n_jobs} workers")  # fmt: skip
