"""scikit-learn's bundled 8x8 digits: the embedded default data set (no files needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from slimkit.data.dataset import LOADERS, RawData
from slimkit.errors import SlimkitError


@LOADERS.register("digits")
def digits(data_dir: Path | None = None) -> RawData:
    """1,797 grey 8x8 images of handwritten digits, shaped (N, 1, 8, 8), values 0..16.

    Example:
        >>> raw = digits()
        >>> raw.train[0].shape
        (1797, 1, 8, 8)
    """
    if data_dir is not None:
        raise SlimkitError("the digits data set is bundled with scikit-learn; drop --data-dir")
    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]
    return RawData(
        train=(images, bunch.target.astype(np.int64)),
        test=None,
        num_classes=10,
        class_names=[str(i) for i in range(10)],
    )
