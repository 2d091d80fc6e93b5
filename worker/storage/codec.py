"""Binary encoding of a segment: a list of (doc name, Yjs update) pairs, no I/O.

Update segments and snapshots share this one format, so load and compaction read both the same
way.  Layout (all integers are unsigned LEB128 varuints unless noted, read and written by the
wire protocol's own helpers in ``worker/yjs_protocol.py``, at most 10 bytes each)::

    magic  b"CSEG"            4 bytes, tells our objects from anything else in the bucket
    version                   currently 1
    count                     number of entries
    count x (name_len, name utf-8, update_len, update)
    crc32                     4 bytes little-endian over everything before it

Doc name ``""`` is the session's index document; any other name is a workspace-relative path.
The checksum is there because Yjs decoders accept surprisingly many flipped bytes as valid
updates; a bit flip must surface as ``CorruptObject``, not as quietly different text.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from worker.storage.base import CorruptObject
from worker.yjs_protocol import FrameError, read_varbytes, read_varuint, write_varuint

__all__ = ["MAGIC", "VERSION", "decode_segment", "encode_segment"]

MAGIC = b"CSEG"
VERSION = 1
_CRC_BYTES = 4


def encode_segment(entries: Sequence[tuple[str, bytes]]) -> bytes:
    """Encode ``entries`` in order; names and updates are stored verbatim."""
    out = bytearray(MAGIC)
    out += write_varuint(VERSION)
    out += write_varuint(len(entries))
    for name, update in entries:
        raw_name = name.encode("utf-8")
        out += write_varuint(len(raw_name))
        out += raw_name
        out += write_varuint(len(update))
        out += update
    out += zlib.crc32(out).to_bytes(_CRC_BYTES, "little")
    return bytes(out)


def decode_segment(data: bytes, key: str | None = None) -> list[tuple[str, bytes]]:
    """Decode a segment, raising ``CorruptObject`` (naming ``key``) on any malformation."""
    if len(data) < len(MAGIC) + _CRC_BYTES:
        raise CorruptObject(key, f"too short for a segment ({len(data)} bytes)")
    if data[: len(MAGIC)] != MAGIC:
        raise CorruptObject(key, f"bad magic {data[: len(MAGIC)]!r}")
    body_end = len(data) - _CRC_BYTES
    body = data[:body_end]
    if zlib.crc32(body) != int.from_bytes(data[body_end:], "little"):
        raise CorruptObject(key, "checksum mismatch (truncated or altered)")
    try:
        return _entries(body, key)
    except FrameError as exc:  # the varint readers' overruns: truncated, overlong, past the end
        raise CorruptObject(key, str(exc)) from None


def _entries(body: bytes, key: str | None) -> list[tuple[str, bytes]]:
    version, pos = read_varuint(body, len(MAGIC))
    if version != VERSION:
        raise CorruptObject(key, f"unsupported segment version {version}")
    count, pos = read_varuint(body, pos)
    # Each entry takes at least two bytes, so a larger count is a lie; checking it up front
    # avoids trusting an attacker-sized number.
    if count > (len(body) - pos) // 2:
        raise CorruptObject(key, f"entry count {count} exceeds the data")
    entries: list[tuple[str, bytes]] = []
    for _ in range(count):
        raw_name, pos = read_varbytes(body, pos)
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptObject(key, f"doc name is not UTF-8: {exc}") from None
        update, pos = read_varbytes(body, pos)
        entries.append((name, update))
    if pos != len(body):
        raise CorruptObject(key, f"{len(body) - pos} bytes of trailing garbage")
    return entries
