"""Per-tensor encodings of the .slim archive: dense, sparse, codebook and sparse+codebook.

Sparse tensors follow Deep Compression (Han et al. 2016, section 2 and figure 3): non-zeros are
stored with the *relative* index from the previous entry in a fixed bit width; when a gap does not
fit, a filler entry (value zero) is inserted. Codebook tensors store each weight as the index of a
shared value (from weight sharing, section 3). Every encoding is exact: decoding gives back the
tensor bit for bit. :func:`encode` tries each that applies and keeps the smallest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimkit.archive.streams import decode_symbols, encode_symbols
from slimkit.errors import SlimkitError

MAX_CODEBOOK = 256  # weight indices are byte symbols for the Huffman coder
INDEX_BITS = range(2, 9)


@dataclass
class Stream:
    """One byte stream of an encoded tensor, with what is needed to decode it.

    Example:
        >>> Stream("index", b"ab", codec="packed", bits=4, count=4).meta()
        {'role': 'index', 'codec': 'packed', 'bits': 4, 'count': 4}
    """

    role: str  # "raw", "codebook", "index" (relative positions), "values" (codebook indices)
    data: bytes
    codec: str = "raw"
    bits: int = 0
    count: int = 0

    def meta(self) -> dict[str, Any]:
        return {"role": self.role, "codec": self.codec, "bits": self.bits, "count": self.count}


@dataclass
class Encoded:
    """A tensor's encoding: its name, settings and streams.

    Example:
        >>> Encoded("dense", [Stream("raw", bytes(16))]).nbytes
        16
    """

    encoding: str
    streams: list[Stream]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(s.data) for s in self.streams)


def encode(array: np.ndarray) -> Encoded:
    """The smallest exact encoding of ``array``.

    Example:
        >>> w = np.zeros(1000, dtype=np.float32); w[::50] = 0.5
        >>> encode(w).encoding
        'sparse+codebook'
    """
    candidates = [_dense(array)]
    if array.dtype == np.float32 and array.size >= 16:
        flat = array.reshape(-1)
        codebook = np.unique(flat[flat != 0])
        nonzero = np.flatnonzero(flat)
        everything = np.unique(flat)  # the zero, if present, needs a code of its own
        if everything.size <= MAX_CODEBOOK:
            candidates.append(_codebook(flat, everything))
        if nonzero.size < flat.size // 2:
            for bits in INDEX_BITS:
                candidates.append(
                    _sparse(flat, nonzero, bits, codebook if codebook.size < MAX_CODEBOOK else None)
                )
    return min(candidates, key=lambda e: e.nbytes)


def decode(
    encoding: str,
    settings: dict[str, Any],
    streams: dict[str, Stream],
    shape: list[int],
    dtype: str,
) -> np.ndarray:
    """Inverse of :func:`encode`.

    Example:
        >>> w = np.zeros(1000, dtype=np.float32); w[::50] = 0.5
        >>> e = encode(w)
        >>> out = decode(e.encoding, e.settings, {s.role: s for s in e.streams}, [1000], "<f4")
        >>> e.encoding, np.array_equal(out, w)
        ('sparse+codebook', True)
    """
    size = math.prod(shape)
    if encoding == "dense":
        out = np.frombuffer(streams["raw"].data, dtype=np.dtype(dtype)).copy()
    elif encoding == "codebook":
        book = _floats(streams["codebook"])
        out = book[_symbols(streams["values"])]
    elif encoding in ("sparse", "sparse+codebook"):
        out = _decode_sparse(encoding, streams, size)
    else:
        raise SlimkitError(f"unknown tensor encoding {encoding!r} in archive")
    if out.size != size:
        raise SlimkitError("archive tensor has the wrong number of elements (corrupt?)")
    return out.reshape(shape)


def _dense(array: np.ndarray) -> Encoded:
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    return Encoded("dense", [Stream("raw", data)])


def _codebook(flat: np.ndarray, book: np.ndarray) -> Encoded:
    bits = max(1, math.ceil(math.log2(book.size)))
    symbols = np.searchsorted(book, flat)
    return Encoded(
        "codebook", [_float_stream("codebook", book), _symbol_stream("values", symbols, bits)]
    )


def _sparse(flat: np.ndarray, nonzero: np.ndarray, bits: int, book: np.ndarray | None) -> Encoded:
    """Relative indices with fillers (Han et al. 2016, figure 3)."""
    span = 2**bits  # an entry can skip at most span - 1 zeros
    gaps = np.diff(nonzero, prepend=-1) - 1
    fillers = gaps // span
    # each real entry is preceded by its fillers, every one of which skips span - 1 zeros
    counts = fillers + 1
    index = np.full(int(counts.sum()), span - 1, dtype=np.int64)
    real_slots = np.cumsum(counts) - 1
    index[real_slots] = gaps - fillers * span
    is_real = np.zeros(index.size, dtype=bool)
    is_real[real_slots] = True
    streams = [_symbol_stream("index", index, bits)]
    if book is None:
        values = np.zeros(index.size, dtype=np.float32)
        values[is_real] = flat[nonzero]
        streams.append(_float_stream("values", values))
        return Encoded("sparse", streams, {"index_bits": bits})
    symbols = np.full(index.size, book.size, dtype=np.int64)  # book.size marks a filler
    symbols[is_real] = np.searchsorted(book, flat[nonzero])
    value_bits = max(1, math.ceil(math.log2(book.size + 1)))
    streams += [_float_stream("codebook", book), _symbol_stream("values", symbols, value_bits)]
    return Encoded("sparse+codebook", streams, {"index_bits": bits})


def _decode_sparse(encoding: str, streams: dict[str, Stream], size: int) -> np.ndarray:
    index = _symbols(streams["index"]).astype(np.int64)
    positions = np.cumsum(index + 1) - 1
    if encoding == "sparse":
        values = _floats(streams["values"])
        real = values != 0
    else:
        book = _floats(streams["codebook"])
        symbols = _symbols(streams["values"]).astype(np.int64)
        real = symbols < book.size
        values = np.zeros(symbols.size, dtype=np.float32)
        values[real] = book[symbols[real]]
    if positions.size and positions[-1] >= size:
        raise SlimkitError("archive sparse indices run past the tensor (corrupt?)")
    out = np.zeros(size, dtype=np.float32)
    out[positions[real]] = values[real]
    return out


def _float_stream(role: str, values: np.ndarray) -> Stream:
    data = values.astype("<f4").tobytes()
    return Stream(role, data, count=values.size)


def _symbol_stream(role: str, symbols: np.ndarray, bits: int) -> Stream:
    codec, data = encode_symbols(symbols, bits)
    return Stream(role, data, codec=codec, bits=bits, count=symbols.size)


def _floats(stream: Stream) -> np.ndarray:
    return np.frombuffer(stream.data, dtype="<f4").astype(np.float32)


def _symbols(stream: Stream) -> np.ndarray:
    return decode_symbols(stream.codec, stream.data, stream.bits, stream.count)
