"""Checkpoints: safetensors weights with the JSON architecture spec in the file's metadata.

One file, no pickle: loading never runs code from the file (zoo factories only, unless the caller
allows a ``package.module:factory`` import).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.io import atomic_path
from slimkit.models.spec import ModelSpec, model_from_spec, spec_of

FORMAT = "slimkit-checkpoint"
VERSION = 1


def save_checkpoint(
    model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Save ``model`` as one safetensors file that :func:`load_model` rebuilds exactly.

    Example:
        >>> import tempfile
        >>> from slimkit.models import build_model, load_model
        >>> model = build_model("mlp", (1, 8, 8), 10)
        >>> path = save_checkpoint(model, tempfile.mkdtemp() + "/mlp.safetensors")
        >>> type(load_model(path)).__name__
        'Sequential'
    """
    spec = spec_of(model)
    tensors = {
        name: t.detach().cpu().contiguous().clone() for name, t in model.state_dict().items()
    }
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "spec": spec.model_dump_json(),
        "extra": json.dumps(extra or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_checkpoint(path: str | Path) -> tuple[ModelSpec, dict[str, torch.Tensor], dict]:
    """Read a checkpoint's spec, tensors and extra metadata without building the model.

    Example:
        >>> import tempfile
        >>> from slimkit.models import build_model
        >>> path = save_checkpoint(build_model("mlp", (1, 8, 8), 10), tempfile.mkdtemp() + "/m.st")
        >>> spec, tensors, extra = read_checkpoint(path)
        >>> spec.name, len(tensors), extra
        ('mlp', 6, {})
    """
    path = Path(path)
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SlimkitError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise SlimkitError(
            f"{path}: a safetensors file without a slimkit architecture spec; "
            "load its weights into your own model with safetensors instead"
        )
    if int(metadata.get("version", "0")) > VERSION:
        raise SlimkitError(
            f"{path}: checkpoint version {metadata['version']} is newer than this "
            f"slimkit reads ({VERSION}); upgrade slimkit"
        )
    try:
        spec = ModelSpec.model_validate_json(metadata["spec"])
        extra = json.loads(metadata.get("extra", "{}"))
    except (ValidationError, ValueError, KeyError) as exc:
        raise SlimkitError(f"{path}: corrupt architecture spec ({exc})") from None
    return spec, tensors, extra


def load_checkpoint(path: str | Path, *, allow_import: bool = False) -> nn.Module:
    """Rebuild the model saved by :func:`save_checkpoint`, in eval mode.

    Example:
        >>> import tempfile
        >>> from slimkit.models import build_model
        >>> path = tempfile.mkdtemp() + "/mlp.safetensors"
        >>> load_checkpoint(save_checkpoint(build_model("mlp", (1, 8, 8), 10), path)).training
        False
    """
    spec, tensors, _ = read_checkpoint(path)
    model = model_from_spec(spec, allow_import=allow_import)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise SlimkitError(f"{path}: weights do not fit the architecture ({first})") from None
    return model.eval()


def sniff(path: Path) -> str:
    """Tell a file's kind from its bytes: safetensors, slim, torchscript, pickle, onnx, unknown.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "weights.pt"
        >>> torch.save({"w": torch.zeros(2)}, path)
        >>> sniff(path)
        'pickle'
    """
    with path.open("rb") as handle:
        head = handle.read(16)
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    if head[8:9] == b"{" and 0 < header_len < path.stat().st_size:
        return "safetensors"
    if head[:8] == b"SLIMKIT\x00":
        return "slim"
    if head[:1] == b"\x80" or head[:2] in (b"(d", b"(l"):
        return "pickle"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        return "pickle"  # torch.save's zip format: a pickle inside
    if path.suffix == ".onnx":
        return "onnx"
    return "unknown"
