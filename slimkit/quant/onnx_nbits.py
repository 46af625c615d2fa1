"""Weight-only models on ONNX Runtime: each quantized Linear as ``com.microsoft.MatMulNBits``.

``MatMulNBits`` keeps a MatMul's weight as 4- or 8-bit codes in blocks along the input axis, one
float scale per block, and computes in float (``accuracy_level`` 0: blocks are dequantized on
the fly), which is what a weight-only model means. slimkit writes its own codes and grids into
it, so a GPTQ model runs in ONNX Runtime with GPTQ's codes, not re-rounded ones. Block sizes are
the model's groups (32/64/128); a per-channel weight repeats its row's scale over blocks of the
power-of-two size (the op's rule) that stores the row in the fewest bytes, padded with zero
codes. Large embedding tables become int8
rows looked up with their scales (as in :mod:`slimkit.quant.dynamic`). Convolutions have no
such op and stay float (with a warning).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from slimkit.errors import SlimkitError
from slimkit.quant.config import QuantConfig
from slimkit.quant.dynamic import MS_DOMAIN, LinearRewriter, save_rewritten, weight_digest

MIN_BLOCK = 16  # MatMulNBits' smallest block; blocks are powers of two


@dataclass
class StoredWeight:
    """A quantized weight as stored: codes ``[out, in]``, scales ``[out, groups]``.

    Example:
        >>> StoredWeight(torch.zeros(2, 4, dtype=torch.int8), torch.ones(2, 1), 8, None).bits
        8
    """

    codes: torch.Tensor
    scale: torch.Tensor
    bits: int
    group: int | None


def dequantized_copy(model: nn.Module) -> tuple[nn.Module, dict[bytes, StoredWeight]]:
    """A plain float copy of a weight-only model (weights at their quantized values, no
    parametrizations, so the exporter writes them as constants), and each quantized weight's
    codes, keyed by the digest of the constant ONNX will hold: ``[in, out]`` for a Linear's
    MatMul, the table itself for an embedding.

    Example:
        >>> from slimkit.quant import quantize
        >>> q = quantize(nn.Sequential(nn.Linear(64, 8)), mode="weight-only", weight_bits=4,
        ...              group_size=32)
        >>> plain, stored = dequantized_copy(q)
        >>> parametrize.is_parametrized(plain[0]), torch.equal(plain[0].weight, q[0].weight)
        (False, True)
        >>> [(w.bits, tuple(w.scale.shape)) for w in stored.values()]
        [(4, (8, 2))]
    """
    plain = copy.deepcopy(model)
    stored: dict[bytes, StoredWeight] = {}
    for layer in list(plain.modules()):
        if not parametrize.is_parametrized(layer, "weight"):
            continue
        quant = layer.parametrizations.weight[0]
        codes, scale = quant.encode(layer.parametrizations.weight.original)
        # deepcopy shares the class torch made for the parametrized module, and removing a
        # parametrization deletes its property from that class: the copy gets its own first
        cls = type(layer)
        layer.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        w = layer.weight.detach().numpy()
        key = weight_digest(w.T if isinstance(layer, nn.Linear) else w)
        stored[key] = StoredWeight(codes, scale.float(), quant.bits, quant.group_size)
    return plain, stored


def matmul_nbits_weight(entry: StoredWeight) -> tuple[np.ndarray, np.ndarray]:
    """(``B`` ``[N, blocks, block*bits/8]`` uint8, scales ``[N*blocks]``) of a
    weight in ``MatMulNBits``' layout: unsigned codes (zero point ``2^(bits-1)``, the op's
    default), two 4-bit codes per byte with the lower-index one in the low nibble.

    Example:
        >>> codes = torch.tensor([[-8, 7, 0]], dtype=torch.int8)
        >>> b, scales = matmul_nbits_weight(StoredWeight(codes, torch.ones(1, 1), 4, None))
        >>> b.shape, [hex(v) for v in b[0, 0, :2]], scales.tolist()  # one block of 16 codes
        ((1, 1, 8), ['0xf0', '0x88'], [1.0])
    """
    rows, cols = entry.codes.shape
    zero = 2 ** (entry.bits - 1)
    block = block_size(entry)
    blocks = -(-cols // block)
    unsigned = torch.full((rows, blocks * block), zero, dtype=torch.int16)
    unsigned[:, :cols] = entry.codes.to(torch.int16) + zero
    if entry.bits == 4:
        unsigned = unsigned[:, 0::2] | (unsigned[:, 1::2] << 4)
    packed = unsigned.to(torch.uint8).reshape(rows, blocks, -1).numpy()
    scale = entry.scale if entry.group else entry.scale.expand(rows, blocks)
    return packed, scale.reshape(-1).numpy().astype(np.float32)


def block_size(entry: StoredWeight) -> int:
    """``MatMulNBits``' block size for a weight: its group, or :func:`_row_block` per channel.

    Example:
        >>> block_size(StoredWeight(torch.zeros(2, 384, dtype=torch.int8), torch.ones(2, 1), 8,
        ...                         None))
        128
    """
    return entry.group or _row_block(entry.codes.shape[1], entry.bits)


def _row_block(cols: int, bits: int) -> int:
    """The block size that stores a row of ``cols`` codes with one scale (repeated per block)
    in the fewest bytes: padding to a power of two against a float32 scale per block.

    Example:
        >>> _row_block(384, 8), _row_block(100, 8)  # 3 blocks of 128; one of 128, 28 padded
        (128, 128)
    """
    candidates = [MIN_BLOCK << i for i in range(max(1, (cols - 1).bit_length() - 3))]

    def size(block: int) -> int:
        blocks = -(-cols // block)
        return blocks * block * bits // 8 + 4 * blocks

    return min(candidates, key=lambda block: (size(block), -block))


class _NBitsRewriter(LinearRewriter):
    """Rewrites the MatMuls and lookups whose constants are the model's quantized weights."""

    def __init__(self, model: Any, stored: dict[bytes, StoredWeight]) -> None:
        super().__init__(model, QuantConfig(mode="weight-only"), [])
        self.stored = stored

    def takes(self, w: np.ndarray) -> bool:
        return weight_digest(w) in self.stored

    def replacements(self, plans: dict[int, tuple[Any, np.ndarray, str, str]]) -> dict[int, list]:
        from onnx import helper, numpy_helper

        new_nodes = {}
        for index, (node, w, bias, output) in plans.items():
            key = weight_digest(w)
            entry = self.stored[key]
            if key not in self.made:  # a Linear called twice: one copy of its codes
                packed, scales = matmul_nbits_weight(entry)
                base = (node.input[1] or node.name).replace("/", "_")
                self.made[key] = [f"{base}_q{entry.bits}", f"{base}_scales"]
                self.graph.initializer.extend([
                    numpy_helper.from_array(packed, self.made[key][0]),
                    numpy_helper.from_array(scales, self.made[key][1]),
                ])  # fmt: skip
            inputs = [node.input[0], *self.made[key]] + (["", "", bias] if bias else [])
            new_nodes[index] = [helper.make_node(
                "MatMulNBits", inputs, [output], name=self._name(node), domain=MS_DOMAIN,
                K=w.shape[0], N=w.shape[1], bits=entry.bits, block_size=block_size(entry),
                accuracy_level=0,
            )]  # fmt: skip
        return new_nodes

    def table_rows(self, table: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
        entry = self.stored.get(weight_digest(table))
        if entry is None or entry.bits != 8 or entry.group is not None:
            return None
        return entry.codes, entry.scale


def export_weight_only(
    model: nn.Module, path: str | Path, write_float: Callable[[nn.Module, Path], Any]
) -> dict[str, Any]:
    """Write a weight-only model (:func:`~slimkit.quant.quantize`, mode ``weight-only``) as an
    ONNX file whose quantized Linears run ``MatMulNBits`` with the model's own codes.

    ``write_float(float_model, path)`` exports a plain float model to ONNX (the caller knows
    its inputs). Returns how many weights went in as integers and which stayed float.

    Example:
        >>> import tempfile
        >>> from slimkit.measure import export_onnx
        >>> from slimkit.quant import quantize
        >>> q = quantize(nn.Sequential(nn.Linear(64, 8)), mode="weight-only", weight_bits=4,
        ...              group_size=32)
        >>> out = tempfile.mkdtemp() + "/w4.onnx"
        >>> export_weight_only(q, out, lambda m, p: export_onnx(m, p, (64,)))["quantized"]
        1
    """
    import onnx

    from slimkit.quant.api import quant_info

    info = quant_info(model)
    if info is None or info["config"]["mode"] != "weight-only":
        raise SlimkitError("export_weight_only needs a weight-only model (quantize it with "
                           "mode='weight-only'); use export_int8 for the other modes")  # fmt: skip
    plain, stored = dequantized_copy(model)
    with tempfile.TemporaryDirectory(prefix="slimkit-nbits-") as tmp:
        raw = Path(tmp) / "float.onnx"
        write_float(plain.eval(), raw)
        graph = onnx.load(str(raw))
    rewriter = _NBitsRewriter(graph, stored)
    rewriter.run()
    save_rewritten(graph, path)
    return {"quantized": rewriter.quantized, "kept_float": rewriter.kept}
