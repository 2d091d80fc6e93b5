"""Binary encoding of a segment: a list of (doc name, Yjs update) pairs, no I/O.

Update segments and snapshots share this one format, so load and compaction read both the same
way.  Layout (all integers are unsigned LEB128 varuints unless noted)::

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

__all__ = ["MAGIC", "VERSION", "decode_segment", "encode_segment"]

MAGIC = b"CSEG"
VERSION = 1
_CRC_BYTES = 4
_MAX_VARUINT_BYTES = 10  # enough for 64 bits; longer encodings are corrupt, not just large


def encode_segment(entries: Sequence[tuple[str, bytes]]) -> bytes:
    """Encode ``entries`` in order; names and updates are stored verbatim."""
    out = bytearray(MAGIC)
    _put_varuint(out, VERSION)
    _put_varuint(out, len(entries))
    for name, update in entries:
        raw_name = name.encode("utf-8")
        _put_varuint(out, len(raw_name))
        out += raw_name
        _put_varuint(out, len(update))
        out += update
    out += zlib.crc32(out).to_bytes(_CRC_BYTES, "little")
    return bytes(out)


def decode_segment(data: bytes, key: str | None = None) -> list[tuple[str, bytes]]:
    """Decode a segment, raising ``CorruptObject`` (naming ``key``) on any malformation."""
    reader = _Reader(data, key)
    if len(data) < len(MAGIC) + _CRC_BYTES:
        raise CorruptObject(key, f"too short for a segment ({len(data)} bytes)")
    if data[: len(MAGIC)] != MAGIC:
        raise CorruptObject(key, f"bad magic {data[: len(MAGIC)]!r}")
    body_end = len(data) - _CRC_BYTES
    if zlib.crc32(data[:body_end]) != int.from_bytes(data[body_end:], "little"):
        raise CorruptObject(key, "checksum mismatch (truncated or altered)")
    reader.pos = len(MAGIC)
    reader.end = body_end
    version = reader.varuint()
    if version != VERSION:
        raise CorruptObject(key, f"unsupported segment version {version}")
    count = reader.varuint()
    # Each entry takes at least two bytes, so a larger count is a lie; checking it up front
    # avoids trusting an attacker-sized number.
    if count > (reader.end - reader.pos) // 2:
        raise CorruptObject(key, f"entry count {count} exceeds the data")
    entries: list[tuple[str, bytes]] = []
    for _ in range(count):
        raw_name = reader.chunk()
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptObject(key, f"doc name is not UTF-8: {exc}") from None
        entries.append((name, reader.chunk()))
    if reader.pos != reader.end:
        raise CorruptObject(key, f"{reader.end - reader.pos} bytes of trailing garbage")
    return entries


def _put_varuint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


class _Reader:
    """A cursor over ``data[pos:end]`` that turns every overrun into ``CorruptObject``."""

    def __init__(self, data: bytes, key: str | None) -> None:
        self.data = data
        self.key = key
        self.pos = 0
        self.end = len(data)

    def varuint(self) -> int:
        value = 0
        for i in range(_MAX_VARUINT_BYTES):
            if self.pos >= self.end:
                raise CorruptObject(self.key, "truncated varuint")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise CorruptObject(self.key, "varuint longer than 10 bytes")

    def chunk(self) -> bytes:
        length = self.varuint()
        if length > self.end - self.pos:
            raise CorruptObject(self.key, f"length {length} runs past the end")
        start = self.pos
        self.pos += length
        return self.data[start : self.pos]
