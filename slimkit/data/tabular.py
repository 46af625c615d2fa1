"""Tabular data from one CSV file: numeric feature columns plus one label column."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from slimkit.data.dataset import LOADERS, RawData
from slimkit.errors import SlimkitError


def labelled_columns(path: Path, label: str) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """(feature column names, every column's cells as text) of a CSV file with a header,
    checked to have the ``label`` column and at least one feature besides it.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = path.write_text("a,b,label\\n1,2,x\\n3,4,y\\n")
        >>> labelled_columns(path, "label")
        (['a', 'b'], {'a': ('1', '3'), 'b': ('2', '4'), 'label': ('x', 'y')})
    """
    header, rows = _read_rows(path)
    if label not in header:
        raise SlimkitError(
            f"{path}: no label column {label!r}; columns present: {', '.join(header)}. "
            "Name the label column with the label option (--label)"
        )
    features = [name for name in header if name != label]
    if not features:
        raise SlimkitError(f"{path}: no feature columns besides the label column {label!r}")
    return features, dict(zip(header, zip(*rows, strict=True), strict=True))


@LOADERS.register("csv")
def csv_table(data_dir: Path | None, label: str = "label") -> RawData:
    """Rows of a CSV file with a header: every column but ``label`` is a numeric feature.

    Features come back as float32 (N, F); labels are mapped to class indices in sorted order
    (numerically when every label is a number) and the original values kept as class names.
    There is no official test split, so :func:`load_data` carves one out.

    Args:
        data_dir: The CSV file, or a folder holding exactly one ``.csv``.
        label: Name of the label column.

    Example:
        >>> raw = csv_table(Path("iris.csv"), label="species")  # doctest: +SKIP
        >>> raw.train[0].shape, raw.class_names  # doctest: +SKIP
        ((150, 4), ['setosa', 'versicolor', 'virginica'])
    """
    path = csv_path(data_dir)
    features, columns = labelled_columns(path, label)
    x = np.stack([_numeric(path, name, columns[name]) for name in features], axis=1)
    y, class_names = class_indices(path, label, columns[label])
    return RawData(train=(x, y), test=None, num_classes=len(class_names), class_names=class_names)


def csv_path(data_dir: Path | None) -> Path:
    """The CSV file named by ``data_dir``: the file itself, or the only ``.csv`` in a folder.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "iris.csv").write_text("a,label\\n1,x\\n")
        >>> csv_path(folder).name
        'iris.csv'
    """
    if data_dir is None:
        raise SlimkitError("the csv data set needs --data-dir: the path of a .csv file")
    if data_dir.is_file():
        return data_dir
    if not data_dir.is_dir():
        raise SlimkitError(f"csv: {data_dir} does not exist; pass the path of a .csv file")
    found = sorted(data_dir.glob("*.csv"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise SlimkitError(
            f"csv: folder {data_dir} must hold exactly one .csv file (found: {names}); "
            "pass the file's path instead"
        )
    return found[0]


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and data rows; utf-8-sig drops the byte-order mark spreadsheets like to add."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if row]  # blank lines carry no data
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SlimkitError(f"{path}: not a readable UTF-8 CSV file ({exc})") from None
    if not rows:
        raise SlimkitError(f"{path}: the file is empty; expected a header row and data rows")
    header = [name.strip() for name in rows[0]]
    if len(rows) == 1:
        raise SlimkitError(f"{path}: the file has a header but no data rows")
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise SlimkitError(
                f"{path}: data row {number} has {len(row)} fields but the header has "
                f"{len(header)}; check for stray commas or unquoted text"
            )
    return header, rows[1:]


def _numeric(path: Path, name: str, cells: tuple[str, ...]) -> np.ndarray:
    """One feature column as float32; empty, non-finite or non-numeric cells are errors."""
    values = np.empty(len(cells), dtype=np.float32)
    for i, cell in enumerate(cells):
        text = cell.strip()
        if not text:
            raise SlimkitError(
                f"{path}: column {name!r} has a missing value (data row {i + 1}); "
                "fill or drop missing values first"
            )
        try:
            values[i] = float(text)
        except ValueError:
            raise SlimkitError(
                f"{path}: column {name!r} is not numeric (value {text!r} in data row {i + 1}); "
                "one-hot encode it first, or drop it"
            ) from None
    if not np.isfinite(values).all():
        raise SlimkitError(f"{path}: column {name!r} holds NaN or infinite values; fix them first")
    return values


def class_indices(path: Path, label: str, cells: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Class index per row and the sorted class names.

    Example:
        >>> y, names = class_indices(Path("t.csv"), "label", ("10", "9", "10"))
        >>> y.tolist(), names
        ([1, 0, 1], ['9', '10'])
    """
    labels = [cell.strip() for cell in cells]
    if "" in labels:
        row = labels.index("") + 1
        raise SlimkitError(f"{path}: label column {label!r} is empty in data row {row}")
    keys: list[float] | list[str] = labels
    try:  # numbers sort as numbers, so that "10" comes after "9"
        numbers = [float(v) for v in labels]
        if np.isfinite(numbers).all():
            keys = numbers
    except ValueError:
        pass
    unique = sorted(set(keys))
    if len(unique) < 2:
        raise SlimkitError(
            f"{path}: label column {label!r} holds {len(unique)} class; need at least 2"
        )
    index = {key: i for i, key in enumerate(unique)}
    y = np.array([index[k] for k in keys], dtype=np.int64)
    written: dict = {}  # names as the file first spells them ("1", not a later "1.0")
    for key, cell in zip(keys, labels, strict=True):
        written.setdefault(key, cell)
    return y, [written[k] for k in unique]
