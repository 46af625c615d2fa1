"""Images sorted into one folder per class, optionally under ``train/`` and ``test/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from slimkit.data.dataset import LOADERS, RawData
from slimkit.errors import SlimkitError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


@LOADERS.register("imagefolder")
def imagefolder(
    data_dir: Path | None,
    size: int | tuple[int, int] | list[int] | None = None,
    grayscale: bool | None = None,
) -> RawData:
    """Images in ``data_dir/<class>/``, or in ``data_dir/train/<class>/`` and ``.../test/<class>/``.

    Class indices follow the sorted class folder names. With the train/test layout the test
    folder is the official test split; otherwise :func:`load_data` carves one out.

    Args:
        data_dir: The root folder.
        size: Height and width every image is resized to (one int for square); default: the size
            of the first image.
        grayscale: One channel instead of RGB; default: True when the first image is grey.

    Example:
        >>> raw = imagefolder(Path("flowers"), size=32)  # doctest: +SKIP
        >>> raw.train[0].shape[1:]  # doctest: +SKIP
        (3, 32, 32)
    """
    train_dir, test_dir = _layout(data_dir)
    train_files = _class_files(train_dir)
    classes = sorted(train_files)
    test_files = None if test_dir is None else _class_files(test_dir)
    if test_files is not None and sorted(test_files) != classes:
        raise SlimkitError(_mismatch(train_dir, test_dir, set(classes), set(test_files)))
    shape, gray = _defaults(train_files[classes[0]][0], size, grayscale)
    train = _read_all(train_files, classes, shape, gray)
    test = None if test_files is None else _read_all(test_files, classes, shape, gray)
    return RawData(train=train, test=test, num_classes=len(classes), class_names=classes)


def _layout(data_dir: Path | None) -> tuple[Path, Path | None]:
    """(train root, test root or None); ``train/`` counts only when it holds class folders."""
    if data_dir is None:
        raise SlimkitError("the imagefolder data set needs --data-dir: a folder of class folders")
    if not data_dir.is_dir():
        raise SlimkitError(f"imagefolder: folder {data_dir} does not exist")
    train_dir, test_dir = data_dir / "train", data_dir / "test"
    if train_dir.is_dir() and _subfolders(train_dir):
        return train_dir, test_dir if test_dir.is_dir() else None
    return data_dir, None


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_files(root: Path) -> dict[str, list[Path]]:
    """Image files per class folder; every class must hold at least one image."""
    folders = _subfolders(root)
    if not folders:
        raise SlimkitError(
            f"imagefolder: no class subfolders in {root}; expected {root}/<class>/<image>.png "
            f"(or {root}/train/<class>/... and {root}/test/<class>/...)"
        )
    files = {}
    for folder in folders:
        images = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            kinds = ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
            raise SlimkitError(f"imagefolder: class folder {folder} holds no images ({kinds})")
        files[folder.name] = images
    if len(files) < 2:
        raise SlimkitError(
            f"imagefolder: {root} holds one class folder ({folders[0].name}); need at least 2"
        )
    return files


def _mismatch(train_dir: Path, test_dir: Path, train: set[str], test: set[str]) -> str:
    only_train = ", ".join(sorted(train - test)) or "none"
    only_test = ", ".join(sorted(test - train)) or "none"
    return (
        f"imagefolder: {train_dir} and {test_dir} must hold the same class folders; "
        f"only in train: {only_train}; only in test: {only_test}"
    )


def _defaults(
    first: Path, size: int | tuple[int, int] | list[int] | None, grayscale: bool | None
) -> tuple[tuple[int, int], bool]:
    """(height, width) and grayscale, filling unset options from the first image."""
    with _open(first) as image:
        natural = (image.height, image.width)
        gray = image.mode in GRAY_MODES if grayscale is None else bool(grayscale)
    if size is None:
        return natural, gray
    shape = (size, size) if isinstance(size, int) else tuple(size)
    if len(shape) != 2 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise SlimkitError(
            f"imagefolder: size must be a positive int or (height, width), got {size!r}"
        )
    return (shape[0], shape[1]), gray


def _open(path: Path) -> Image.Image:
    image = None
    try:
        image = Image.open(path)
        image.load()  # decode now, so that a corrupt file fails here with its name
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if image is not None:
            image.close()
        raise SlimkitError(f"imagefolder: cannot read image {path}: {exc}") from None
    return image


def _read_all(
    files: dict[str, list[Path]], classes: list[str], shape: tuple[int, int], gray: bool
) -> tuple[np.ndarray, np.ndarray]:
    """All images as float32 (N, C, H, W) in [0, 1] and their class indices."""
    paths = [(path, label) for label, name in enumerate(classes) for path in files[name]]
    x = np.empty((len(paths), 1 if gray else 3, *shape), dtype=np.float32)
    for i, (path, _) in enumerate(paths):
        x[i] = _pixels(path, shape, gray)
    return x, np.array([label for _, label in paths], dtype=np.int64)


def _pixels(path: Path, shape: tuple[int, int], gray: bool) -> np.ndarray:
    with _open(path) as image:
        mode, scale = ("L", 255.0) if gray else ("RGB", 255.0)
        if gray and image.mode in ("I", "I;16"):  # 16-bit grey: "L" would clip it at 255
            mode, scale = "F", 65535.0
        converted = image.convert(mode)
    if (converted.height, converted.width) != shape:
        converted = converted.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    array = np.asarray(converted, dtype=np.float32) / np.float32(scale)
    return array[None] if gray else array.transpose(2, 0, 1)
