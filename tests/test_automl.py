"""AutoML: config validation, search on iris, skops round trip, csv with gaps and text,
failing and slow trials, the command line's bad input, and refusing untrusted files."""

from __future__ import annotations

import time
import zipfile

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from slimkit.errors import SlimkitError
from slimkit.search.automl import (
    AutoMLConfig,
    automl,
    load_pipeline,
    load_table,
    make_config,
    run_automl,
    save_pipeline,
    split_table,
)
from slimkit.search.automl import space as automl_space
from slimkit.search.automl.data import read_csv


@pytest.fixture(scope="module")
def iris_run():
    """One AutoML search on iris's training split (12 s budget, shared by several tests)."""
    train, test = split_table(load_table("iris"), 0.25, seed=0)
    result = automl(train.x, train.y, budget=12, seed=0, n_jobs=2, quiet=True)
    return result, test


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"budget": 0}, "budget: must be a positive number of seconds"),
        ({"budget": -5}, "budget: must be a positive number of seconds"),
        ({"budget": 10, "families": []}, "families: is empty; name at least one of linear"),
        ({"budget": 10, "families": ["svm", "xgb"]}, "unknown family 'xgb'; valid families"),
        ({"budget": 10, "folds": 1}, "folds"),
        ({"budget": 10, "budgte": 3}, "budgte"),
    ],
)
def test_config_errors_are_clear(overrides, message):
    with pytest.raises(SlimkitError, match=message):
        make_config(**overrides)


def test_config_defaults():
    config = AutoMLConfig(budget=30, families=["svm", "svm", "knn"])
    assert config.families == ["svm", "knn"] and config.folds == 5 and config.ensemble
    assert config.trial_limit == 7.5


def test_iris_pipeline_above_090(iris_run):
    result, test = iris_run
    assert hasattr(result.pipeline, "predict")
    assert (result.pipeline.predict(test.x) == test.y).mean() > 0.9
    assert result.seconds < 12 * 1.5  # the budget holds, refit included (slack: busy machine)
    board = result.leaderboard
    assert result.trials["complete"] >= 2
    assert {"family", "params", "cv_mean", "cv_std", "seconds"} <= set(board[0])
    scores = [row["cv_mean"] for row in board if row["state"] == "complete"]
    assert scores == sorted(scores, reverse=True)
    assert result.chosen["cv_mean"] >= scores[0]  # an ensemble is kept only if it beats the best


def test_save_load_round_trip_without_pickle(iris_run, tmp_path):
    result, test = iris_run
    path = tmp_path / "model.skops"
    digest = save_pipeline(result.pipeline, path)
    assert zipfile.is_zipfile(path) and not path.read_bytes().startswith(b"\x80")
    loaded = load_pipeline(path, sha256_hex=digest)
    np.testing.assert_array_equal(loaded.predict(test.x), result.pipeline.predict(test.x))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(SlimkitError, match="SHA-256 differs"):
        load_pipeline(path, sha256_hex=digest)


def test_untrusted_type_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import Pipeline

    class Sneaky(GaussianNB):  # a type slimkit never writes
        pass

    path = tmp_path / "other.skops"
    sio.dump(Pipeline([("m", Sneaky().fit([[0.0], [1.0]], [0, 1]))]), path)
    with pytest.raises(SlimkitError, match="refusing to load types slimkit does not write"):
        load_pipeline(path)
    path.write_bytes(b"\x80\x04not a zip")
    with pytest.raises(SlimkitError, match="not a skops file"):
        load_pipeline(path)


def _csv_with_gaps(path, rows: int = 160):
    """Numeric columns with missing cells, a text column that decides the class, a label."""
    rng = np.random.default_rng(0)
    lines = ["size,colour,weight,label"]
    for i in range(rows):
        colour = ["red", "green", "blue"][i % 3]
        label = "yes" if colour == "red" or rng.random() < 0.1 else "no"
        size = "" if i % 6 == 0 else f"{rng.normal(3 if label == 'yes' else 0):.3f}"
        weight = "NA" if i % 9 == 0 else f"{rng.normal():.3f}"
        lines.append(f"{size},{'' if i % 11 == 0 else colour},{weight},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_with_missing_values_and_text_column(tmp_path):
    table = read_csv(_csv_with_gaps(tmp_path / "gaps.csv"))
    assert table.categorical == [1] and table.has_missing and table.class_names == ["no", "yes"]
    report = run_automl(table, tmp_path / "out", budget=8, n_trials=10, n_jobs=1, quiet=True)
    assert report["result"]["metric"] > 0.8
    assert all("impute" in row["params"] for row in report["leaderboard"])
    for name in ("model.skops", "report.json", "report.md", "leaderboard.png"):
        assert (tmp_path / "out" / name).is_file()
    pipeline = load_pipeline(tmp_path / "out" / "model.skops", report["result"]["artifact_sha256"])
    step = pipeline.steps[0][1] if pipeline.steps[0][0] == "prep" else None
    if step is not None:  # a single pipeline: imputation and one-hot are its first step
        kinds = {name: type(t.steps[-1][1]).__name__ for name, t, _ in step.transformers_[:2]}
        assert kinds["cat"] == "OneHotEncoder"
    odd = np.array([[np.nan, "purple", 0.1], [2.0, np.nan, np.nan]], dtype=object)
    assert pipeline.predict(odd).shape == (2,)  # unseen category and gaps still predict


class _Exploding(ClassifierMixin, BaseEstimator):
    def fit(self, x, y):
        raise RuntimeError("boom")


class _Slow(ClassifierMixin, BaseEstimator):
    def fit(self, x, y):
        time.sleep(0.6)
        self.classes_ = np.unique(y)
        return self

    def predict(self, x):
        return np.zeros(len(x), dtype=int)


def test_failing_and_slow_trials_are_recorded_and_search_goes_on(monkeypatch):
    monkeypatch.setitem(automl_space.BUILD, "knn", lambda params, info, seed: _Exploding())
    monkeypatch.setitem(automl_space.BUILD, "mlp", lambda params, info, seed: _Slow())
    t = load_table("iris")
    result = automl(t.x, t.y, budget=20, families=["knn", "mlp", "linear"], n_trials=6,
                    n_jobs=1, max_trial_seconds=1.0, ensemble=False, quiet=True)  # fmt: skip
    failed = {row["family"]: row["error"] for row in result.leaderboard if row["state"] == "failed"}
    assert failed["knn"] == "RuntimeError: boom"
    assert "time limit" in failed["mlp"]
    assert result.trials["total"] == 6 and result.chosen["family"] == "linear"


def test_nothing_finished_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(automl_space.BUILD, "knn", lambda params, info, seed: _Exploding())
    t = load_table("iris")
    with pytest.raises(SlimkitError, match=r"no trial finished.*RuntimeError: boom"):
        automl(t.x, t.y, budget=5, families=["knn"], n_trials=2, n_jobs=1, quiet=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "iris", "--budget", "0"], "budget: must be a positive number"),
        (["--data", "nope", "--budget", "5"], "unknown data 'nope'"),
        (["--data", "csv", "--budget", "5"], "needs --data-dir"),
        (["--data", "csv", "--budget", "5", "--label", "kind", "--data-dir", "CSV"],
         "no label column 'kind'"),
    ],
)  # fmt: skip
def test_cli_bad_input_exit_2(args, message, tmp_path, bad_input):
    csv = _csv_with_gaps(tmp_path / "t.csv", rows=20)
    args = [csv if a == "CSV" else a for a in args]
    assert message in bad_input("automl", *args, "--out", tmp_path / "out", "--quiet")
    assert not (tmp_path / "out").exists()


def test_cli_refuses_existing_output(tmp_path, bad_input):
    (tmp_path / "out").mkdir()
    error = bad_input("automl", "--data", "iris", "--budget", "5", "--out", tmp_path / "out")
    assert "pass --force" in error
