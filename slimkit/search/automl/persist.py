"""Saving fitted pipelines without pickle: skops.io, with an allowlist of types on loading.

``skops.io.dump`` writes a zip of JSON plus numpy arrays; nothing in it runs code when it is
read. ``skops.io.load`` only builds types it is told to trust: slimkit asks skops which types in
the file it does not trust by default (``get_untrusted_types``) and trusts them only when every
one is on the allowlist below (types slimkit's own pipelines contain); any other type is refused
with an error naming it. The file's SHA-256 goes into the report, and ``load_pipeline`` can check
it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from slimkit.errors import SlimkitError
from slimkit.io import atomic_path

# Types skops does not trust by default that slimkit's pipelines hold (checked by saving every
# family, every scaler and a voting ensemble): fitted trees, k-NN indexes and distance metrics,
# MLP's optimiser state, HistGradientBoosting's predictors, numpy dtypes.
ALLOWED_TYPES = frozenset({
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",
})  # fmt: skip


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x"
        >>> _ = p.write_bytes(b"abc")
        >>> sha256(p)[:12]
        'ba7816bf8f01'
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_pipeline(pipeline: Any, path: str | Path) -> str:
    """Write ``pipeline`` with ``skops.io.dump`` (whole or not at all); return its SHA-256.

    Example:
        >>> import tempfile
        >>> from sklearn.linear_model import LogisticRegression
        >>> m = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
        >>> p = Path(tempfile.mkdtemp()) / "m.skops"
        >>> len(save_pipeline(m, p)), load_pipeline(p).predict([[1.0]])
        (64, array([1]))
    """
    import skops.io as sio

    path = Path(path)
    with atomic_path(path) as tmp:
        sio.dump(pipeline, tmp)
    return sha256(path)


def load_pipeline(path: str | Path, sha256_hex: str | None = None) -> Any:
    """Load a pipeline slimkit saved; refuse files holding types outside :data:`ALLOWED_TYPES`.

    ``sha256_hex`` (from report.json) makes a changed file an error too.

    Example:
        >>> pipe = load_pipeline("out/model.skops")  # doctest: +SKIP
    """
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise SlimkitError(f"{path}: no such file; expected a .skops file that slimkit wrote")
    if sha256_hex is not None and sha256(path) != sha256_hex.lower():
        raise SlimkitError(f"{path}: SHA-256 differs from the one recorded; the file changed")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # not a zip, or no skops schema inside
        raise SlimkitError(f"{path}: not a skops file ({type(exc).__name__}: {exc})") from None
    refused = sorted(set(untrusted) - ALLOWED_TYPES)
    if refused:
        raise SlimkitError(
            f"{path}: refusing to load types slimkit does not write: {', '.join(refused)}; "
            "load it yourself with skops.io.load(path, trusted=[...]) if you trust the file"
        )
    return sio.load(path, trusted=untrusted)
