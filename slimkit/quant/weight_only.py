"""Weight-only quantization: int8 or group-wise int4 weights, float compute, stored packed.

Weights of Linear (and Conv) layers are quantized symmetrically, per output channel (int8) or per
group of ``group_size`` consecutive input weights (int4, as GPTQ/AWQ-style weight-only schemes
store them: Frantar et al. 2023, Lin et al. 2024). Large embedding tables (a transformer's
vocabulary: half of all-MiniLM-L6-v2's weights) become int8 rows with one scale each, at either
bit width: on MiniLM that costs 0.00003 of cosine, where int4 rows would cost 0.0017 (groups of
32) to 0.0036 (groups of 128). :func:`save_packed` writes a safetensors file whose tensors are the
packed integers (two int4 values per byte) and their scales, so the bytes on disk really shrink;
:func:`load_packed` rebuilds a runnable float model from it.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimkit.errors import SlimkitError
from slimkit.io import atomic_path
from slimkit.quant.config import QuantConfig

FORMAT = "slimkit-packed"
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def group_scales(w: torch.Tensor, bits: int, group_size: int | None) -> torch.Tensor:
    """Scales ``[out, groups]`` of a 2-D weight ``[out, in]``: each group's largest-magnitude
    weight maps to the most negative code, -2^(b-1) (the scale takes the opposite sign), so all
    2^b codes are used, as llama.cpp's Q4_0 and ONNX Runtime's symmetric int4 do: steps of
    max/8 at 4 bits, not max/7. ``group_size=None``: one group per output row.

    Example:
        >>> (group_scales(torch.tensor([[0.5, -1.0, 0.25, 0.0]]), 4, 2) * 8).tolist()
        [[1.0, -0.25]]
    """
    out_features, in_features = w.shape
    size = group_size or in_features
    groups = math.ceil(in_features / size)
    padded = torch.zeros(out_features, groups * size, dtype=torch.float32)
    padded[:, :in_features] = w.float()
    blocks = padded.reshape(out_features, groups, size)
    peak = blocks.gather(2, blocks.abs().argmax(2, keepdim=True)).squeeze(2)
    scale = peak / -(2 ** (bits - 1))
    scale = torch.where(scale.abs() < 1e-7, torch.full_like(scale, 1e-7), scale)
    # Scales are stored as float16; rounding them here keeps the fake-quantized model identical
    # to what loads back from the file.
    return scale.half().float()


def expand_scales(scale: torch.Tensor, group_size: int | None, in_features: int) -> torch.Tensor:
    """Scales ``[out, groups]`` repeated to one per weight ``[out, in]``.

    Example:
        >>> expand_scales(torch.tensor([[1.0, 2.0]]), 2, 3).tolist()
        [[1.0, 1.0, 2.0]]
    """
    return scale.repeat_interleave(group_size or in_features, dim=1)[:, :in_features]


def group_codes(w: torch.Tensor, scale: torch.Tensor, bits: int, group_size: int | None):
    """Integer codes in ``[-2^(b-1), 2^(b-1)-1]`` of a 2-D weight on the grid ``scale``,
    rounded to nearest.

    Example:
        >>> group_codes(torch.tensor([[0.5, -1.0]]), torch.tensor([[0.25]]), 4, None).tolist()
        [[2, -4]]
    """
    step = expand_scales(scale, group_size, w.shape[1])
    codes = torch.clamp(torch.round(w.float() / step), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return codes.to(torch.int8)


def group_quantize(
    w: torch.Tensor, bits: int, group_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric integer codes and scales of a 2-D weight ``[out, in]``, rounded to nearest.

    ``group_size=None``: one scale per output row; else one per ``group_size`` inputs (the last
    group may be shorter). Codes lie in ``[-2^(b-1), 2^(b-1)-1]`` (:func:`group_scales`).

    Example:
        >>> q, s = group_quantize(torch.tensor([[0.5, -1.0, 0.25, 0.0]]), 4, 2)
        >>> q.tolist(), s.shape
        ([[4, -8, -8, 0]], torch.Size([1, 2]))
    """
    scale = group_scales(w, bits, group_size)
    return group_codes(w, scale, bits, group_size), scale


def group_dequantize(codes: torch.Tensor, scale: torch.Tensor, group_size: int | None):
    """Float weights from :func:`group_quantize`'s codes and scales.

    Example:
        >>> codes, scale = group_quantize(torch.tensor([[0.5, -1.0, 0.25, 0.0]]), 4, 2)
        >>> group_dequantize(codes, scale, 2).abs().tolist()  # abs: 0 * negative scale is -0.0
        [[0.5, 1.0, 0.25, 0.0]]
    """
    return codes.float() * expand_scales(scale, group_size, codes.shape[1])


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

    The grid follows the weight (rounding to nearest) until :func:`gptq_round` fixes it
    (``scale``) and chooses the codes on it.

    Example:
        >>> from torch.nn.utils import parametrize
        >>> layer = nn.Linear(4, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[0.5, -1.0, 0.25, 0.0]]))
        >>> _ = parametrize.register_parametrization(layer, "weight", GroupWeightQuant(4, 2))
        >>> [round(v, 3) for v in layer.weight[0].tolist()]  # 4-bit steps of 1/8 in group 0
        [0.5, -1.0, 0.25, 0.0]
    """

    def __init__(self, bits: int, group_size: int | None) -> None:
        super().__init__()
        self.bits, self.group_size = bits, group_size
        self.mode = "quant"
        self.register_buffer("scale", None)  # the fixed grid, once GPTQ ran; checkpoints keep it

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        saved = state_dict.get(prefix + "scale")
        if saved is not None and (self.scale is None or self.scale.shape != saved.shape):
            self.scale = torch.empty(saved.shape)  # a checkpoint of GPTQ's grid: room for it
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def encode(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, scales) of the weight ``w``, flattened to ``[out, in]``: what is stored."""
        flat = w.detach().reshape(w.shape[0], -1)
        if self.scale is None:
            return group_quantize(flat, self.bits, self.group_size)
        return group_codes(flat, self.scale, self.bits, self.group_size), self.scale

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.mode != "quant":
            return w
        codes, scale = self.encode(w)
        dequant = group_dequantize(codes, scale, self.group_size).reshape(w.shape)
        return w + (dequant - w).detach()  # straight-through: trainable if fine-tuned


def prepare_weight_only(model: nn.Module, cfg: QuantConfig) -> nn.Module:
    """Quantize the weights of every Linear/Conv (except ``cfg.skip``) in place, and those of
    every embedding table of at least 4,096 values to int8 rows.

    Example:
        >>> net = prepare_weight_only(nn.Sequential(nn.Embedding(100, 64), nn.Linear(64, 2)),
        ...                           QuantConfig(mode="weight-only", weight_bits=4, group_size=32))
        >>> [m.parametrizations.weight[0].bits for m in net]
        [8, 4]
    """
    from slimkit.quant.dynamic import MIN_TABLE, is_skipped

    count = 0
    for name, layer in list(model.named_modules()):
        if is_skipped(name, cfg.skip):
            continue
        if isinstance(layer, LAYERS):
            quant = GroupWeightQuant(cfg.weight_bits, cfg.group_size)
            count += 1
        elif isinstance(layer, nn.Embedding) and layer.weight.numel() >= MIN_TABLE:
            quant = GroupWeightQuant(8, None)  # a lookup: no GPTQ, nearest is its best rounding
        else:
            continue
        parametrize.register_parametrization(layer, "weight", quant)
    if count == 0:
        raise SlimkitError("weight-only quantization found no Linear or Conv layer")
    return model


def gptq_round(model: nn.Module, batches: list[torch.Tensor | Mapping[str, torch.Tensor]]
               ) -> list[str]:  # fmt: skip
    """Choose the codes of a :func:`prepare_weight_only` model by GPTQ (:mod:`slimkit.quant.gptq`)
    on calibration ``batches`` (input tensors, or a transformer's keyword batches); the grids
    stay those of rounding to nearest. Returns the layers re-rounded (Linears, and Conv2d
    without groups).

    Example:
        >>> torch.manual_seed(0) and None
        >>> x = torch.randn(256, 64) * torch.linspace(0.1, 3, 64)  # inputs of unequal size
        >>> cfg = QuantConfig(mode="weight-only", weight_bits=4, group_size=32)
        >>> net = prepare_weight_only(nn.Sequential(nn.Linear(64, 16)), cfg)
        >>> with torch.no_grad():
        ...     target, nearest = net[0].parametrizations.weight.original @ x.T, net(x).T
        ...     gptq_round(net, [x])
        ...     rounded = net(x).T
        ['0']
        >>> bool(((rounded - target) ** 2).sum() < ((nearest - target) ** 2).sum())
        True
    """
    from slimkit.progress import track
    from slimkit.quant.gptq import gptq_codes, input_hessians, supports

    quants = {
        name: layer.parametrizations.weight[0]
        for name, layer in model.named_modules()
        if parametrize.is_parametrized(layer, "weight") and supports(layer)
    }
    for quant in quants.values():  # the float layers' inputs, as the paper's H
        quant.mode = "off"
    try:
        with parametrize.cached():  # the int8 embedding tables, quantized once, not per batch
            hessians = input_hessians(model, list(quants), batches)
    finally:
        for quant in quants.values():
            quant.mode = "quant"
    for name, quant in track(quants.items(), "GPTQ", total=len(quants)):
        original = model.get_submodule(name).parametrizations.weight.original
        flat = original.detach().reshape(original.shape[0], -1)
        scale = group_scales(flat, quant.bits, quant.group_size)
        step = expand_scales(scale, quant.group_size, flat.shape[1])
        codes = gptq_codes(flat, hessians[name], step, quant.bits)
        quant.scale = scale
        with torch.no_grad():
            original.copy_(group_dequantize(codes, scale, quant.group_size).reshape(original.shape))
    return list(quants)


def save_packed(model: nn.Module, path: str | Path) -> Path:
    """Write a weight-only quantized model as packed integers + scales in one safetensors file.

    Other tensors (biases, norms) stay float32. The architecture spec of a slimkit model travels
    in the metadata, as in slimkit checkpoints, so :func:`load_packed` needs nothing else; any
    other model (a Hugging Face transformer) loads back into its float architecture.

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
    from slimkit.models.spec import SPEC_ATTR
    from slimkit.quant.api import quant_info

    info = quant_info(model)
    if info is None or info["config"]["mode"] != "weight-only":
        raise SlimkitError("save_packed stores weight-only quantized models (mode 'weight-only')")
    tensors, layers = {}, {}
    quantized = {n for n, m in model.named_modules() if parametrize.is_parametrized(m, "weight")}
    for name in quantized:
        layer = model.get_submodule(name)
        quant = layer.parametrizations.weight[0]
        w = layer.parametrizations.weight.original.detach()
        codes, scale = quant.encode(w)
        packed = pack_int4(codes) if quant.bits == 4 else codes
        tensors[f"{name}.weight.packed"] = packed.contiguous()
        tensors[f"{name}.weight.scale"] = scale.to(torch.float16).contiguous()
        layers[name] = {"shape": list(w.shape), "bits": quant.bits, "group": quant.group_size}
    for key, value in model.state_dict().items():
        if ".parametrizations." not in key:
            tensors[key] = value.detach().contiguous().clone()
    metadata = {"format": FORMAT, "layers": json.dumps(layers)}
    if getattr(model, SPEC_ATTR, None) is not None:
        metadata["spec"] = json.dumps(spec_of(model).kwargs["base"])
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_packed(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a float model from :func:`save_packed`'s file (weights dequantized), in eval mode.

    ``model``: the float architecture to fill (copied, not changed), for a model slimkit did
    not build; a slimkit model's file carries its own.

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
    if model is not None:
        model = copy.deepcopy(model)
    elif "spec" in metadata:
        model = model_from_spec(ModelSpec(**json.loads(metadata["spec"])))
    else:
        raise SlimkitError(
            f"{path}: holds a model slimkit did not build; pass its float architecture "
            "(load_packed(path, model))"
        )
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
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise SlimkitError(f"{path}: does not fit the given model ({reason})") from None
    return model.eval()
