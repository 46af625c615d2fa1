"""The .slim container: magic, version, a compressed JSON header, then the tensor streams.

Layout (all integers little-endian; the full spec is docs/slim-format.md)::

    8 bytes  magic  b"SLIMKIT\\0"
    4 bytes  format version (uint32)
    4 bytes  header length H (uint32)
    H bytes  zlib-compressed UTF-8 JSON header
    ...      payload: every stream's bytes, in header order

The header lists each tensor (name, shape, dtype, encoding, settings) and its streams (role, codec,
bits, count, byte length, CRC-32), so a reader checks every byte before trusting it.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

from slimkit.archive.encodings import Encoded, Stream
from slimkit.errors import SlimkitError

MAGIC = b"SLIMKIT\x00"
VERSION = 1
_PREFIX = struct.Struct("<8sII")


def write_container(
    path: Path, header: dict[str, Any], tensors: list[tuple[dict, Encoded]]
) -> None:
    """Write the header (with per-tensor entries) and streams to ``path``.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "t.slim"
        >>> write_container(path, {}, [({"name": "w"}, Encoded("dense", [Stream("raw", b"ab")]))])
        >>> path.read_bytes()[:7]
        b'SLIMKIT'
    """
    entries, payload = [], []
    for meta, encoded in tensors:
        streams = []
        for stream in encoded.streams:
            streams.append(
                {**stream.meta(), "length": len(stream.data), "crc32": zlib.crc32(stream.data)}
            )
            payload.append(stream.data)
        entries.append(
            {**meta, "encoding": encoded.encoding, "settings": encoded.settings, "streams": streams}
        )
    body = zlib.compress(
        json.dumps({**header, "tensors": entries}, separators=(",", ":")).encode(), 9
    )
    with path.open("wb") as handle:
        handle.write(_PREFIX.pack(MAGIC, VERSION, len(body)))
        handle.write(body)
        for data in payload:
            handle.write(data)


def read_container(path: Path) -> tuple[dict[str, Any], list[tuple[dict, dict[str, Stream]]]]:
    """Read and verify a container: the header and each tensor's streams by role.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "t.slim"
        >>> write_container(path, {}, [({"name": "w"}, Encoded("dense", [Stream("raw", b"ab")]))])
        >>> header, tensors = read_container(path)
        >>> header["tensors"][0]["encoding"], tensors[0][1]["raw"].data
        ('dense', b'ab')
    """
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise SlimkitError(f"cannot read {path}: {exc.strerror}") from None
    if len(blob) < _PREFIX.size or blob[:8] != MAGIC:
        raise SlimkitError(f"{path} is not a .slim archive (bad magic bytes)")
    _, version, header_len = _PREFIX.unpack_from(blob)
    if version > VERSION:
        raise SlimkitError(
            f"{path} uses .slim format version {version}; this slimkit reads up to "
            f"version {VERSION}: upgrade slimkit"
        )
    header = _header(path, blob[_PREFIX.size : _PREFIX.size + header_len])
    offset = _PREFIX.size + header_len
    tensors = []
    for entry in header.get("tensors", []):
        streams = {}
        for meta in entry["streams"]:
            data = blob[offset : offset + meta["length"]]
            offset += meta["length"]
            if len(data) != meta["length"]:
                raise SlimkitError(f"{path} is truncated (tensor {entry['name']!r} incomplete)")
            if zlib.crc32(data) != meta["crc32"]:
                raise SlimkitError(f"{path} is corrupt (checksum of tensor {entry['name']!r})")
            streams[meta["role"]] = Stream(
                meta["role"], data, meta["codec"], meta["bits"], meta["count"]
            )
        tensors.append((entry, streams))
    if offset != len(blob):
        raise SlimkitError(f"{path} has {len(blob) - offset} unexpected trailing bytes (corrupt?)")
    return header, tensors


def _header(path: Path, body: bytes) -> dict[str, Any]:
    try:
        header = json.loads(zlib.decompress(body))
    except (zlib.error, ValueError):
        raise SlimkitError(f"{path} is corrupt or truncated (unreadable header)") from None
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
        raise SlimkitError(f"{path} is corrupt (header has no tensor list)")
    return header
