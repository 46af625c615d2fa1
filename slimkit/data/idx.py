"""MNIST and Fashion-MNIST from the four standard IDX files (gzipped or not).

The IDX format is a 4-byte big-endian magic number (``0x0000 08 NN``: unsigned bytes, ``NN``
dimensions), one big-endian uint32 per dimension, then the raw bytes. It is parsed here with
numpy so that no download helper (torchvision) is needed and every defect gets a clear message.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from slimkit.data.dataset import LOADERS, RawData
from slimkit.errors import SlimkitError

IMAGES_MAGIC = 2051  # unsigned bytes, 3 dimensions (count, rows, columns)
LABELS_MAGIC = 2049  # unsigned bytes, 1 dimension (count)

# (images, labels) file names per split, as torchvision and the original site name them.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


@LOADERS.register("mnist")
def mnist(data_dir: Path | None) -> RawData:
    """MNIST handwritten digits: 60,000 train / 10,000 test grey images, shaped (N, 1, 28, 28).

    ``data_dir`` holds the four IDX files (``train-images-idx3-ubyte.gz`` ...), or a folder
    ``mnist/`` that does.

    Example:
        >>> raw = mnist(Path("../shared/data/mnist"))  # doctest: +SKIP
        >>> raw.train[0].shape, raw.test[0].shape  # doctest: +SKIP
        ((60000, 1, 28, 28), (10000, 1, 28, 28))
    """
    return _load("mnist", data_dir, [str(i) for i in range(10)])


@LOADERS.register("fashion-mnist")
def fashion_mnist(data_dir: Path | None) -> RawData:
    """Fashion-MNIST (Zalando): same layout and file names as MNIST, ten kinds of clothing.

    Example:
        >>> raw = fashion_mnist(Path("../shared/data/fashion-mnist"))  # doctest: +SKIP
        >>> raw.class_names[0]  # doctest: +SKIP
        'T-shirt/top'
    """
    return _load("fashion-mnist", data_dir, FASHION_CLASSES)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes (``.gz`` is decompressed) and check its header.

    Args:
        path: The file.
        magic: The expected magic number: 2051 for images, 2049 for labels.

    Returns:
        A uint8 array shaped by the header's dimensions.

    Example:
        >>> read_idx(Path("t10k-labels-idx1-ubyte.gz"), LABELS_MAGIC).shape  # doctest: +SKIP
        (10000,)
    """
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SlimkitError(
            f"{path}: truncated: {len(data)} bytes, shorter than its {header}-byte IDX header"
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise SlimkitError(
            f"{path}: bad magic number {found} (expected {magic} for IDX {kind}); "
            "is this the right file?"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise SlimkitError(
            f"{path}: truncated or wrong length: header says {'x'.join(map(str, dims))} "
            f"({expected} bytes of data) but the file holds {len(data) - header}; re-download it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _load(name: str, data_dir: Path | None, class_names: list[str]) -> RawData:
    folder = _folder(name, data_dir)
    train, test = (_read_split(folder, split, len(class_names)) for split in ("train", "test"))
    return RawData(train=train, test=test, num_classes=len(class_names), class_names=class_names)


def _expected_names() -> str:
    return ", ".join(f"{stem}.gz" for pair in FILES.values() for stem in pair)


def _folder(name: str, data_dir: Path | None) -> Path:
    """The folder that holds the files: ``data_dir`` itself, or ``data_dir/<name>``."""
    if data_dir is None:
        raise SlimkitError(
            f"the {name} data set needs --data-dir: a folder holding {_expected_names()}"
        )
    for folder in (data_dir, data_dir / name):
        if all(_find(folder, stem) for pair in FILES.values() for stem in pair):
            return folder
    if not data_dir.is_dir():
        raise SlimkitError(
            f"{name}: data folder {data_dir} does not exist; expected it to hold "
            f"{_expected_names()}"
        )
    missing = [f"{s}.gz" for pair in FILES.values() for s in pair if not _find(data_dir, s)]
    if len(missing) == 4:
        raise SlimkitError(
            f"{name}: {data_dir} holds none of the expected IDX files: {_expected_names()} "
            "(gzipped or not)"
        )
    raise SlimkitError(
        f"{name}: {data_dir} lacks {', '.join(missing)} (gzipped or not); "
        f"the four expected IDX files are {_expected_names()}"
    )


def _find(folder: Path, stem: str) -> Path | None:
    """The gzipped file if present, else the plain one, else None."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise SlimkitError(f"{path}: corrupt gzip data ({exc}); re-download it") from None


def _read_split(folder: Path, split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = (_find(folder, stem) for stem in FILES[split])
    assert images_path is not None and labels_path is not None  # checked by _folder
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise SlimkitError(
            f"{images_path.name} holds {len(images)} images but {labels_path.name} holds "
            f"{len(labels)} labels; the counts must match (in {folder})"
        )
    if len(labels) and labels.max() >= num_classes:
        raise SlimkitError(
            f"{labels_path}: label {int(labels.max())} out of range 0..{num_classes - 1}"
        )
    # Scale to [0, 1] here; load_data standardises with train statistics afterwards.
    x = images.astype(np.float32)[:, None, :, :] / np.float32(255.0)
    return x, labels.astype(np.int64)
