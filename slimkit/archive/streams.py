"""Symbol streams: bit packing and Huffman coding of small-alphabet streams.

Deep Compression (Han et al. 2016, section 4) Huffman-codes the relative-index and the
weight-index streams. We use zlib's deflate with the ``Z_HUFFMAN_ONLY`` strategy, which is
exactly canonical Huffman coding of byte symbols (no LZ77 matching), from a library every Python
ships. Each stream keeps whichever is smaller: fixed-width bit packing or Huffman.
"""

from __future__ import annotations

import zlib

import numpy as np

from slimkit.errors import SlimkitError

PACKED, HUFFMAN = "packed", "huffman"


def pack_bits(symbols: np.ndarray, bits: int) -> bytes:
    """Pack integer symbols (each < 2**bits, bits <= 8) into a byte string, MSB first.

    Example:
        >>> pack_bits(np.array([1, 2, 3]), 2).hex()
        '6c'
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    as_bits = np.unpackbits(symbols.astype(np.uint8)[:, None], axis=1)[:, 8 - bits :]
    return np.packbits(as_bits.reshape(-1)).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`.

    Example:
        >>> unpack_bits(bytes.fromhex("6c"), 2, 3).tolist()
        [1, 2, 3]
    """
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits]
    if flat.size != count * bits:
        raise SlimkitError("archive stream is shorter than its header says (truncated?)")
    grouped = flat.reshape(count, bits)
    padded = np.zeros((count, 8), dtype=np.uint8)
    padded[:, 8 - bits :] = grouped
    return np.packbits(padded, axis=1).reshape(-1)


def huffman_encode(symbols: np.ndarray) -> bytes:
    """Huffman-code byte symbols (zlib deflate, Huffman-only strategy).

    Example:
        >>> len(huffman_encode(np.zeros(1000, dtype=np.uint8))) < 1000
        True
    """
    coder = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_HUFFMAN_ONLY)
    return coder.compress(symbols.astype(np.uint8).tobytes()) + coder.flush()


def huffman_decode(data: bytes, count: int) -> np.ndarray:
    """Inverse of :func:`huffman_encode`.

    Example:
        >>> huffman_decode(huffman_encode(np.array([3, 1, 3])), 3).tolist()
        [3, 1, 3]
    """
    try:
        raw = zlib.decompress(data, -15)
    except zlib.error as exc:
        raise SlimkitError(f"archive stream is corrupt ({exc})") from None
    if len(raw) != count:
        raise SlimkitError("archive stream decodes to the wrong length (corrupt?)")
    return np.frombuffer(raw, dtype=np.uint8).copy()


def encode_symbols(symbols: np.ndarray, bits: int) -> tuple[str, bytes]:
    """The smaller of bit packing and Huffman coding, with its codec name.

    Example:
        >>> codec, data = encode_symbols(np.zeros(1000, dtype=np.uint8), 5)
        >>> codec, len(data) < 1000 * 5 // 8
        ('huffman', True)
    """
    packed = pack_bits(symbols, bits)
    coded = huffman_encode(symbols)
    return (HUFFMAN, coded) if len(coded) < len(packed) else (PACKED, packed)


def decode_symbols(codec: str, data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`encode_symbols`.

    Example:
        >>> codec, data = encode_symbols(np.array([1, 2, 3]), 2)
        >>> codec, decode_symbols(codec, data, 2, 3).tolist()
        ('packed', [1, 2, 3])
    """
    if codec == HUFFMAN:
        return huffman_decode(data, count)
    if codec == PACKED:
        return unpack_bits(data, bits, count)
    raise SlimkitError(f"unknown stream codec {codec!r} in archive")
