"""The segment codec: what round-trips, and every way a segment can be malformed."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.storage import CorruptObject, decode_segment, encode_segment
from worker.storage.codec import MAGIC


def _with_crc(body: bytes) -> bytes:
    """A body with a valid checksum, to reach the structural checks behind it."""
    return body + zlib.crc32(body).to_bytes(4, "little")


class TestSegmentCodec:
    def test_round_trip_keeps_order_names_and_bytes(self) -> None:
        """Index doc "", unicode paths, empty and binary updates, duplicates: all kept in order."""
        entries = [
            ("", b"\x00\x00"),
            ("src/main.py", bytes(range(256))),
            ("docs/naïve ☃.md", b""),
            ("src/main.py", b"second update of the same doc"),
        ]
        assert decode_segment(encode_segment(entries)) == entries

    def test_empty_segment_round_trips(self) -> None:
        """Zero entries is a valid (if useless) segment."""
        assert decode_segment(encode_segment([])) == []

    @given(st.lists(st.tuples(st.text(), st.binary())))
    def test_round_trip_property(self, entries: list[tuple[str, bytes]]) -> None:
        """Any list of (name, bytes) pairs decodes to itself."""
        assert decode_segment(encode_segment(entries)) == entries

    def test_header_starts_with_magic(self) -> None:
        """Our objects are recognisable by their first bytes."""
        assert encode_segment([("a", b"b")]).startswith(MAGIC)

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"", "too short"),
            (b"CSE", "too short"),
            (b"XSEG" + encode_segment([("a", b"b")])[4:], "bad magic"),
            (b'{"json": "not a segment"}', "bad magic"),
            (_with_crc(MAGIC + b"\x02\x00"), "unsupported segment version 2"),
            (_with_crc(MAGIC), "truncated varuint"),
            (_with_crc(MAGIC + b"\x01"), "truncated varuint"),
            (_with_crc(MAGIC + b"\x01\x05\x01a"), "exceeds the data"),
            (_with_crc(MAGIC + b"\x01\x01\x05ab"), "runs past the end"),
            (_with_crc(MAGIC + b"\x01\x01\x01a\x09xy"), "runs past the end"),
            (_with_crc(MAGIC + b"\x01\x01\x01a"), "truncated varuint"),
            (_with_crc(MAGIC + b"\x01\x01\x02\xff\xfe\x00"), "not UTF-8"),
            (_with_crc(MAGIC + b"\x01\x00junk"), "trailing garbage"),
            (_with_crc(MAGIC + b"\x01\x01\x01a\x01b!"), "trailing garbage"),
            (_with_crc(MAGIC + b"\x01" + b"\xff" * 11), "longer than 10 bytes"),
        ],
        ids=[
            "empty",
            "short",
            "bad-magic",
            "json",
            "future-version",
            "no-version",
            "no-count",
            "count-too-large",
            "name-past-end",
            "update-past-end",
            "missing-update",
            "name-not-utf8",
            "garbage-after-empty",
            "garbage-after-entries",
            "overlong-varuint",
        ],
    )
    def test_malformed_segments_raise_corrupt_object(self, data: bytes, reason: str) -> None:
        """Every malformation is CorruptObject naming the key, never an IndexError or a guess."""
        with pytest.raises(CorruptObject, match=reason) as info:
            decode_segment(data, key="sessions/s/updates/x.seg")
        assert info.value.key == "sessions/s/updates/x.seg"

    def test_every_truncation_is_detected(self) -> None:
        """Cutting a segment anywhere (a torn upload, a short read) is always caught."""
        data = encode_segment([("a.txt", b"hello"), ("", b"\x00\x00"), ("b", b"x" * 300)])
        for cut in range(len(data)):
            with pytest.raises(CorruptObject):
                decode_segment(data[:cut])

    def test_every_single_bit_flip_is_detected(self) -> None:
        """A flipped bit anywhere fails the checksum instead of decoding as different text."""
        data = encode_segment([("a.txt", b"hello"), ("", b"\x00\x00")])
        for index in range(len(data)):
            for bit in range(8):
                flipped = bytearray(data)
                flipped[index] ^= 1 << bit
                with pytest.raises(CorruptObject):
                    decode_segment(bytes(flipped))

    def test_appended_garbage_is_detected(self) -> None:
        """Bytes after a valid segment are corruption, not ignored."""
        with pytest.raises(CorruptObject):
            decode_segment(encode_segment([("a", b"b")]) + b"\x00")
