"""The .slim archive: a model's architecture spec and its tensors, each in its smallest exact form.

Dense, sparse (relative indices, Deep Compression), codebook (weight sharing) or both, with the
index and value streams Huffman-coded. :func:`save_slim` writes one; :func:`load_slim` rebuilds a
PyTorch model whose outputs equal the saved model's; :func:`inspect_slim` reports per-tensor
storage as Han et al. 2016's Table 2 does. Spec: docs/slim-format.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from slimkit.archive.container import read_container, write_container
from slimkit.archive.encodings import decode, encode
from slimkit.errors import SlimkitError
from slimkit.io import atomic_path
from slimkit.models.spec import ModelSpec, model_from_spec, spec_of

FORMAT = "slimkit-archive"


def save_slim(
    model: nn.Module,
    path: str | Path,
    input_shape: Sequence[int] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (a slimkit-built model) as a .slim archive.

    Pruned weights (exact zeros) are stored sparsely and shared weights (few distinct values) by
    codebook, automatically: whichever exact encoding is smallest per tensor. ``input_shape`` is
    accepted for the export-format contract and checked against the model's spec.

    Example:
        >>> import tempfile
        >>> from slimkit.models import build_model
        >>> model = build_model("lenet300", (1, 28, 28), 10)
        >>> path = save_slim(model, tempfile.mkdtemp() + "/m.slim")
        >>> torch.equal(load_slim(path)[1].weight, model[1].weight)
        True
    """
    spec = spec_of(model)
    if input_shape is not None and list(input_shape) != spec.input_shape:
        raise SlimkitError(
            f"input shape {tuple(input_shape)} differs from the model's {tuple(spec.input_shape)}"
        )
    tensors = []
    for name, tensor in model.state_dict().items():
        array = tensor.detach().cpu().contiguous().numpy()
        meta = {"name": name, "shape": list(array.shape), "dtype": array.dtype.str}
        tensors.append((meta, encode(array)))
    header = {"format": FORMAT, "spec": spec.model_dump(), "metadata": metadata or {}}
    path = Path(path)
    with atomic_path(path) as tmp:
        write_container(tmp, header, tensors)
    return path


def load_slim(path: str | Path) -> nn.Module:
    """Rebuild the model stored in a .slim archive (eval mode).

    Corrupt, truncated or newer-version archives raise :class:`SlimkitError` with the reason.

    Example:
        >>> import tempfile
        >>> from slimkit.models import build_model
        >>> path = save_slim(build_model("mlp", (1, 8, 8), 10), tempfile.mkdtemp() + "/m.slim")
        >>> load_slim(path).training
        False
    """
    path = Path(path)
    header, tensors = read_container(path)
    try:
        spec = ModelSpec.model_validate(header["spec"])
    except (KeyError, ValidationError) as exc:
        raise SlimkitError(f"{path}: corrupt architecture spec ({exc})".splitlines()[0]) from None
    state = {}
    for entry, streams in tensors:
        array = decode(
            entry["encoding"], entry["settings"], streams, entry["shape"], entry["dtype"]
        )
        state[entry["name"]] = torch.from_numpy(np.ascontiguousarray(array))
    model = model_from_spec(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SlimkitError(
            f"{path}: tensors do not fit the architecture ({str(exc).splitlines()[0]})"
        ) from None
    return model.eval()


def inspect_slim(path: str | Path) -> list[dict[str, Any]]:
    """Per-tensor storage: encoding, elements, non-zeros, bytes, bits per weight and per index.

    ``bits_per_weight`` counts the value stream (codebook indices or floats) per stored entry;
    ``bits_per_index`` the relative-index stream per stored entry (sparse encodings only).

    Example:
        >>> import tempfile
        >>> from slimkit.models import build_model
        >>> path = save_slim(build_model("mlp", (1, 8, 8), 10), tempfile.mkdtemp() + "/m.slim")
        >>> row = inspect_slim(path)[0]
        >>> row["name"], row["encoding"], row["stored_entries"], row["bits_per_weight"]
        ('1.weight', 'dense', 16384, 32.0)
    """
    _, tensors = read_container(Path(path))
    rows = []
    for entry, streams in tensors:
        stored = streams["index"].count if "index" in streams else 0
        row = {
            "name": entry["name"],
            "shape": entry["shape"],
            "encoding": entry["encoding"],
            "bytes": sum(len(s.data) for s in streams.values()),
            **entry["settings"],
        }
        size = int(np.prod(entry["shape"])) if entry["shape"] else 1
        values = streams.get("values") or streams.get("raw")
        entries = stored or size
        row["stored_entries"] = entries
        row["bits_per_weight"] = round(8 * len(values.data) / max(entries, 1), 3)
        if "index" in streams:
            row["bits_per_index"] = round(8 * len(streams["index"].data) / max(stored, 1), 3)
        rows.append(row)
    return rows


__all__ = ["inspect_slim", "load_slim", "save_slim"]
