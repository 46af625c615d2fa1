"""Weight-only quantization: int8 or group-wise int4 weights, float compute, stored packed.

Weights of Linear (and Conv) layers are quantized symmetrically, per output channel (int8) or per
group of ``group_size`` consecutive input weights (int4, as GPTQ/AWQ-style weight-only schemes
store them: Frantar et al. 2023, Lin et al. 2024). :func:`save_packed` writes a safetensors file
whose tensors are the packed integers (two int4 values per byte) and their scales, so the bytes
on disk really shrink; :func:`load_packed` rebuilds a runnable float model from it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimkit.errors import SlimkitError
from slimkit.io import atomic_path
from slimkit.quant.config import QuantConfig

FORMAT = "slimkit-packed"
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def group_quantize(
    w: torch.Tensor, bits: int, group_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric integer codes and scales of a 2-D weight ``[out, in]``.

    ``group_size=None``: one scale per output row; else one per ``group_size`` inputs (the input
    dimension is zero-padded to a multiple of it). Codes lie in ``[-(2^(b-1)-1), 2^(b-1)-1]``.

    Example:
        >>> q, s = group_quantize(torch.tensor([[0.5, -1.0, 0.25, 0.0]]), 4, 2)
        >>> q.tolist(), s.shape
        ([[4, -7, 7, 0]], torch.Size([1, 2]))
    """
    out_features, in_features = w.shape
    size = group_size or in_features
    groups = math.ceil(in_features / size)
    padded = torch.zeros(out_features, groups * size, dtype=torch.float32)
    padded[:, :in_features] = w.float()
    blocks = padded.reshape(out_features, groups, size)
    qmax = 2 ** (bits - 1) - 1
    # Scales are stored as float16; rounding them here keeps the fake-quantized model identical
    # to what loads back from the file.
    scale = (blocks.abs().amax(2) / qmax).clamp(min=1e-7).half().float()
    codes = torch.clamp(torch.round(blocks / scale[..., None]), -qmax, qmax)
    return codes.reshape(out_features, -1)[:, :in_features].to(torch.int8), scale


def group_dequantize(codes: torch.Tensor, scale: torch.Tensor, group_size: int | None):
    """Float weights from :func:`group_quantize`'s codes and scales.

    Example:
        >>> codes, scale = group_quantize(torch.tensor([[0.5, -1.0, 0.25, 0.0]]), 4, 2)
        >>> [round(v, 3) for v in group_dequantize(codes, scale, 2)[0].tolist()]
        [0.571, -1.0, 0.25, 0.0]
    """
    in_features = codes.shape[1]
    size = group_size or in_features
    repeat = scale.repeat_interleave(size, dim=1)[:, :in_features]
    return codes.float() * repeat


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack signed 4-bit codes (``-8..7``) two per byte, low nibble first, along the last axis.

    Example:
        >>> codes = torch.tensor([[1, -2, 7]], dtype=torch.int8)
        >>> unpack_int4(pack_int4(codes), 3).tolist()
        [[1, -2, 7]]
    """
    if codes.min() < -8 or codes.max() > 7:
        raise SlimkitError("int4 codes must lie in -8..7")
    flat = codes.to(torch.int16) & 0xF
    if flat.shape[-1] % 2:
        flat = torch.nn.functional.pad(flat, (0, 1))
    low, high = flat[..., 0::2], flat[..., 1::2]
    return (low | (high << 4)).to(torch.uint8)


def unpack_int4(packed: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4` (``length`` codes along the last axis).

    Example:
        >>> unpack_int4(torch.tensor([[0xE1, 0x07]], dtype=torch.uint8), 3).tolist()
        [[1, -2, 7]]
    """
    p = packed.to(torch.int16)
    nibbles = torch.stack([p & 0xF, (p >> 4) & 0xF], dim=-1).flatten(-2)[..., :length]
    return torch.where(nibbles > 7, nibbles - 16, nibbles).to(torch.int8)


class GroupWeightQuant(nn.Module):
    """Parametrization: the weight as its group-wise (or per-row) quantized value.

    Example:
        >>> from torch.nn.utils import parametrize
        >>> layer = nn.Linear(4, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[0.5, -1.0, 0.25, 0.0]]))
        >>> _ = parametrize.register_parametrization(layer, "weight", GroupWeightQuant(4, 2))
        >>> [round(v, 3) for v in layer.weight[0].tolist()]  # 4-bit steps of 1/7 in group 0
        [0.571, -1.0, 0.25, 0.0]
    """

    def __init__(self, bits: int, group_size: int | None) -> None:
        super().__init__()
        self.bits, self.group_size = bits, group_size
        self.mode = "quant"

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.mode != "quant":
            return w
        flat = w.reshape(w.shape[0], -1)
        codes, scale = group_quantize(flat.detach(), self.bits, self.group_size)
        dequant = group_dequantize(codes, scale, self.group_size).reshape(w.shape)
        return w + (dequant - w).detach()  # straight-through: trainable if fine-tuned


def prepare_weight_only(model: nn.Module, cfg: QuantConfig) -> nn.Module:
    """Quantize the weights of every Linear/Conv (except ``cfg.skip``) in place.

    Example:
        >>> net = prepare_weight_only(nn.Sequential(nn.Linear(64, 2)),
        ...                           QuantConfig(mode="weight-only", weight_bits=4, group_size=32))
        >>> net(torch.ones(1, 64)).shape
        torch.Size([1, 2])
    """
    from slimkit.quant.dynamic import is_skipped

    count = 0
    for name, layer in list(model.named_modules()):
        if isinstance(layer, LAYERS) and not is_skipped(name, cfg.skip):
            quant = GroupWeightQuant(cfg.weight_bits, cfg.group_size)
            parametrize.register_parametrization(layer, "weight", quant)
            count += 1
    if count == 0:
        raise SlimkitError("weight-only quantization found no Linear or Conv layer")
    return model


def save_packed(model: nn.Module, path: str | Path) -> Path:
    """Write a weight-only quantized model as packed integers + scales in one safetensors file.

    Other tensors (biases, norms) stay float32. The architecture spec travels in the metadata,
    as in slimkit checkpoints, so :func:`load_packed` needs nothing else.

    Example:
        >>> import tempfile
        >>> from slimkit.models import build_model
        >>> from slimkit.quant import quantize
        >>> q = quantize(build_model("mlp", (1, 8, 8), 10), mode="weight-only", weight_bits=4,
        ...              group_size=32)
        >>> net = load_packed(save_packed(q, tempfile.mkdtemp() + "/m.safetensors"))
        >>> torch.allclose(net(torch.ones(1, 1, 8, 8)), q(torch.ones(1, 1, 8, 8)), atol=1e-5)
        True
    """
    from safetensors.torch import save_file

    from slimkit.models import spec_of
    from slimkit.quant.api import quant_info

    info = quant_info(model)
    if info is None or info["config"]["mode"] != "weight-only":
        raise SlimkitError("save_packed stores weight-only quantized models (mode 'weight-only')")
    spec = spec_of(model).kwargs["base"]
    tensors, layers = {}, {}
    quantized = {n for n, m in model.named_modules() if parametrize.is_parametrized(m, "weight")}
    for name in quantized:
        layer = model.get_submodule(name)
        quant = layer.parametrizations.weight[0]
        w = layer.parametrizations.weight.original.detach()
        codes, scale = group_quantize(w.reshape(w.shape[0], -1), quant.bits, quant.group_size)
        packed = pack_int4(codes) if quant.bits == 4 else codes
        tensors[f"{name}.weight.packed"] = packed.contiguous()
        tensors[f"{name}.weight.scale"] = scale.to(torch.float16).contiguous()
        layers[name] = {"shape": list(w.shape), "bits": quant.bits, "group": quant.group_size}
    for key, value in model.state_dict().items():
        if ".parametrizations." not in key:
            tensors[key] = value.detach().contiguous().clone()
    metadata = {"format": FORMAT, "spec": json.dumps(spec), "layers": json.dumps(layers)}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_packed(path: str | Path) -> nn.Module:
    """Rebuild a float model from :func:`save_packed`'s file (weights dequantized), in eval mode.

    Example:
        >>> import tempfile
        >>> from safetensors.torch import save_file
        >>> path = tempfile.mkdtemp() + "/other.safetensors"
        >>> save_file({"w": torch.zeros(2)}, path)  # a safetensors file, but not save_packed's
        >>> load_packed(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        slimkit.errors.SlimkitError: ...: not a packed weight-only file written by slimkit
    """
    from safetensors import SafetensorError, safe_open

    from slimkit.models import ModelSpec, model_from_spec

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise SlimkitError(f"{path}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise SlimkitError(f"{path}: not a packed weight-only file written by slimkit")
    model = model_from_spec(ModelSpec(**json.loads(metadata["spec"])))
    state = {k: v for k, v in tensors.items() if not k.endswith((".packed", ".scale"))}
    for name, layer in json.loads(metadata["layers"]).items():
        shape, bits, group = layer["shape"], layer["bits"], layer["group"]
        rows, cols = shape[0], math.prod(shape[1:])
        packed = tensors[f"{name}.weight.packed"]
        codes = unpack_int4(packed, cols) if bits == 4 else packed
        scale = tensors[f"{name}.weight.scale"].float()
        state[f"{name}.weight"] = group_dequantize(codes.reshape(rows, cols), scale, group).reshape(
            shape
        )
    model.load_state_dict(state, strict=True)
    return model.eval()
