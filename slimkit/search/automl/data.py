"""Tabular data for AutoML: scikit-learn's bundled sets, or a CSV file with missing values and
text (categorical) columns, which slimkit's plain ``csv`` loader refuses.

Numeric columns become float64 with NaN for missing cells; when a table has a text column the
features are an object array (numbers as floats, text as str, missing cells NaN), which the
pipeline's ColumnTransformer splits by column index. No pandas is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from slimkit.data.tabular import class_indices, csv_path, labelled_columns
from slimkit.errors import SlimkitError

BUNDLED = ("iris", "wine", "breast_cancer", "digits")
DATA_NAMES = (*BUNDLED, "csv")
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})  # spellings of "no value"


@dataclass(frozen=True)
class Table:
    """Features ``x`` (rows x columns), class indices ``y`` and what the columns are.

    Example:
        >>> t = Table("toy", np.array([[1.0, np.nan], [2.0, 3.0]]), np.array([0, 1]),
        ...           ["a", "b"], categorical=[], class_names=["no", "yes"])
        >>> t.numeric, t.has_missing, t.rows(np.array([1])).has_missing
        ([0, 1], True, False)
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    categorical: list[int]
    class_names: list[str]

    @property
    def numeric(self) -> list[int]:
        """Indices of the numeric columns."""
        return [i for i in range(self.x.shape[1]) if i not in set(self.categorical)]

    @property
    def has_missing(self) -> bool:
        """Whether any numeric cell is NaN (then imputation is part of the search)."""
        cols = self.x[:, self.numeric].astype(np.float64)
        return bool(np.isnan(cols).any())

    def rows(self, index: np.ndarray) -> Table:
        """The same table restricted to ``index``."""
        return replace(self, x=self.x[index], y=self.y[index])


def load_table(name: str, data_dir: Path | None = None, label: str = "label") -> Table:
    """Load a bundled scikit-learn set by name, or a CSV file (``name="csv"``).

    Example:
        >>> t = load_table("iris")
        >>> t.x.shape, t.class_names
        ((150, 4), ['setosa', 'versicolor', 'virginica'])
    """
    if name in BUNDLED:
        return _bundled(name)
    if name == "csv":
        return read_csv(csv_path(Path(data_dir) if data_dir is not None else None), label)
    raise SlimkitError(f"unknown data {name!r}; valid: {', '.join(DATA_NAMES)}")


def _bundled(name: str) -> Table:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    return Table(
        name=name,
        x=np.asarray(bunch.data, dtype=np.float64),
        y=np.asarray(bunch.target, dtype=np.int64),
        feature_names=[str(f) for f in bunch.get("feature_names", range(bunch.data.shape[1]))],
        categorical=[],
        class_names=[str(c) for c in bunch.target_names],
    )


def read_csv(path: Path, label: str = "label") -> Table:
    """A CSV file with a header; a column whose cells are not all numbers is categorical.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = p.write_text("a,b,label\\n1,x,0\\n,y,1\\n3,x,1\\n")
        >>> t = read_csv(p)
        >>> t.categorical, t.has_missing
        ([1], True)
    """
    features, columns = labelled_columns(path, label)
    parsed = [_column(path, name, columns[name]) for name in features]
    categorical = [i for i, (_, is_text) in enumerate(parsed) if is_text]
    dtype = object if categorical else np.float64
    x = np.empty((len(columns[label]), len(features)), dtype=dtype)
    for i, (values, _) in enumerate(parsed):
        x[:, i] = values
    y, class_names = class_indices(path, label, columns[label])
    return Table(path.stem, x, y, features, categorical, class_names)


def _column(path: Path, name: str, cells: tuple[str, ...]) -> tuple[list[object], bool]:
    """The column's values (NaN where missing) and whether it is categorical (text)."""
    texts = [cell.strip() for cell in cells]
    present = [t for t in texts if t.lower() not in MISSING]
    if not present:
        raise SlimkitError(f"{path}: column {name!r} has no values at all; drop it")
    numbers = [_number(t) for t in present]
    if all(v is not None and math.isfinite(v) for v in numbers):
        return [math.nan if t.lower() in MISSING else float(t) for t in texts], False
    return [math.nan if t.lower() in MISSING else t for t in texts], True


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def split_table(table: Table, test_fraction: float = 0.25, seed: int = 0) -> tuple[Table, Table]:
    """A stratified, seeded train / held-out test split.

    Example:
        >>> train, test = split_table(load_table("iris"), 0.25, seed=0)
        >>> len(train.y), len(test.y)
        (112, 38)
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(len(table.y))
    counts = np.bincount(table.y)
    stratify = table.y if counts[counts > 0].min() >= 2 else None  # a class of one can't split
    train, test = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    return table.rows(np.sort(train)), table.rows(np.sort(test))
