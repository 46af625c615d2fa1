"""The one object every slimkit function takes as data: splits, shapes, classes and metric."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from slimkit.errors import SlimkitError
from slimkit.registry import Registry


@dataclass
class Split:
    """One split: inputs ``x`` (a float tensor, or a list of strings for text) and labels ``y``.

    Example:
        >>> split = Split(torch.zeros(5, 3), torch.tensor([0, 1, 0, 1, 1]))
        >>> len(split), len(split.loader(batch_size=2))
        (5, 3)
    """

    x: torch.Tensor | list[str]
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def loader(self, batch_size: int = 128, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A DataLoader over this split (tensor inputs only); shuffling is seeded."""
        if not isinstance(self.x, torch.Tensor):
            raise SlimkitError("this split holds text; tokenize it before making a loader")
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(
            TensorDataset(self.x, self.y),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
        )


@dataclass
class Dataset:
    """Train / validation / test splits plus what a model needs to know about them.

    Example:
        >>> from slimkit.data import load_data
        >>> data = load_data("digits")
        >>> data.input_shape, data.num_classes, data.metric
        ((1, 8, 8), 10, 'accuracy')
    """

    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int
    metric: str = "accuracy"
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    class_names: list[str] | None = None

    def task(self, split: str = "test") -> dict[str, Any]:
        """The ``task`` block of report.json."""
        return {
            "data": self.name,
            "metric": self.metric,
            "split": split,
            "n": len(getattr(self, split)),
        }


@dataclass
class RawData:
    """What a loader returns before splitting and normalisation.

    ``test`` is None when the source has no official test split; one is then carved out.

    Example:
        >>> raw = RawData(train=(np.zeros((4, 2)), np.array([0, 1, 0, 1])), test=None,
        ...               num_classes=2)
        >>> raw.train[0].shape, raw.class_names, raw.normalize
        ((4, 2), None, True)
    """

    train: tuple[np.ndarray | list[str], np.ndarray]
    test: tuple[np.ndarray | list[str], np.ndarray] | None
    num_classes: int
    class_names: list[str] | None = None
    normalize: bool = True


Loader = Callable[..., RawData]
LOADERS: Registry[Loader] = Registry("data set")


def load_data(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    **options: Any,
) -> Dataset:
    """Load a data set by name and return its seeded train / validation / test splits.

    The validation split is carved from train (stratified, seeded); sources without an official
    test split also get a seeded, stratified test split of ``test_fraction``. Images are
    standardised per channel with statistics computed from the training split only.

    Args:
        name: ``digits``, ``mnist``, ``fashion-mnist``, ``csv``, ``imagefolder`` or ``sst2``.
        data_dir: Folder (or file, for ``csv``) holding the data; not needed for ``digits``.
        val_fraction: Share of the training data held out for validation.
        test_fraction: Share held out for test when the source has no test split.
        seed: Seed of the splits.
        **options: Loader-specific settings (e.g. ``label="target"`` for ``csv``).

    Example:
        >>> data = load_data("digits", seed=0)
        >>> len(data.train) + len(data.val) + len(data.test)
        1797
    """
    if not 0.0 < val_fraction < 1.0:
        raise SlimkitError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 0.0 < test_fraction < 1.0:
        raise SlimkitError(f"test_fraction must be in (0, 1), got {test_fraction}")
    loader = LOADERS.get(name)
    _check_options(name, loader, options)
    raw = loader(None if data_dir is None else Path(data_dir), **options)
    train_x, train_y = raw.train
    if raw.test is None:
        train_x, test_x, train_y, test_y = _split(train_x, train_y, test_fraction, seed)
    else:
        test_x, test_y = raw.test
    train_x, val_x, train_y, val_y = _split(train_x, train_y, val_fraction, seed + 1)
    splits = [(train_x, train_y), (val_x, val_y), (test_x, test_y)]
    if isinstance(train_x, list):
        made = [Split(list(x), torch.as_tensor(np.asarray(y), dtype=torch.long)) for x, y in splits]
        return Dataset(
            name, *made, input_shape=(), num_classes=raw.num_classes, class_names=raw.class_names
        )
    mean, std = _channel_stats(train_x) if raw.normalize else (None, None)
    made = [
        Split(_to_tensor(x, mean, std), torch.as_tensor(y, dtype=torch.long)) for x, y in splits
    ]
    return Dataset(
        name,
        *made,
        input_shape=tuple(made[0].x.shape[1:]),
        num_classes=raw.num_classes,
        mean=[] if mean is None else mean.tolist(),
        std=[] if std is None else std.tolist(),
        class_names=raw.class_names,
    )


def _check_options(name: str, loader: Loader, options: dict[str, Any]) -> None:
    """An option the loader does not take is bad input (a SlimkitError), not a TypeError."""
    params = inspect.signature(loader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p in params if p != "data_dir"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SlimkitError(
            f"data set {name!r} has no option {', '.join(unknown)}; "
            f"its options: {', '.join(accepted) or 'none'}"
        )


def _split(x: Any, y: np.ndarray, fraction: float, seed: int) -> tuple[Any, Any, Any, Any]:
    if len(y) < 4:  # checked first: counts.min() below fails on an empty array
        raise SlimkitError(f"too few examples to split ({len(y)}); need at least 4")
    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 and round(len(y) * fraction) >= len(counts) else None
    return train_test_split(x, y, test_size=fraction, random_state=seed, stratify=stratify)


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel (axis 1) for images, per feature for tabular rows."""
    axes = (0, *range(2, x.ndim)) if x.ndim > 2 else (0,)
    mean = x.mean(axis=axes, dtype=np.float64)
    std = x.std(axis=axes, dtype=np.float64)
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def _to_tensor(x: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None) -> torch.Tensor:
    x = x.astype(np.float32, copy=True)
    if mean is not None and std is not None:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x = (x - mean.reshape(shape)) / std.reshape(shape)
    return torch.from_numpy(x)
