"""The router's frames: the client frames it reads before a join, its own, boundary tracking."""

from __future__ import annotations

import os
import random

import pytest

from router import frames


class TestFrames:
    @pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 200_000])
    def test_masked_frames_round_trip(self, size: int) -> None:
        payload = os.urandom(size)
        wire = frames.frame(frames.OP_BINARY, payload, mask=True)
        found = frames.parse_client_frame(wire + b"next", 1 << 20)
        assert found is not None
        parsed, wire_size = found
        assert (parsed.fin, parsed.opcode, parsed.data, wire_size) == (
            True,
            frames.OP_BINARY,
            payload,
            len(wire),
        )
        assert frames.parse_client_frame(wire[:-1], 1 << 20) is None or size == 0

    def test_an_oversize_frame_is_refused_from_its_header(self) -> None:
        wire = frames.frame(frames.OP_TEXT, b"x" * 2000, mask=True)
        with pytest.raises(frames.FrameTooLarge):
            frames.parse_client_frame(wire[:4], 1024)

    @pytest.mark.parametrize("size", [0, 125])
    def test_control_frames_up_to_125_bytes_are_read(self, size: int) -> None:
        for opcode in (frames.OP_PING, frames.OP_PONG, frames.OP_CLOSE):
            found = frames.parse_client_frame(frames.frame(opcode, b"p" * size, mask=True), 1024)
            assert found is not None
            assert found[0].opcode == opcode and found[0].data == b"p" * size

    def test_a_fragmented_message_is_read_frame_by_frame(self) -> None:
        first = frames.frame(frames.OP_TEXT, b"he", mask=True, fin=False)
        found = frames.parse_client_frame(first + frames.frame(frames.OP_CONT, b"y", mask=True), 64)
        assert found is not None and (found[0].fin, found[0].opcode, found[0].data) == (
            False,
            frames.OP_TEXT,
            b"he",
        )


def _unchecked(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked frame as a careless client would build it (our builder refuses such frames)."""
    n = len(payload)
    if n < 126:
        size = bytes([0x80 | n])
    elif n < 65536:
        size = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return bytes([(0x80 if fin else 0) | rsv | opcode]) + size + b"\0\0\0\0" + payload


class TestClientFrameRules:
    """What RFC 6455 has a server refuse is refused (1002), with websockets' reason."""

    def test_an_unmasked_client_frame_is_refused_from_its_first_bytes(self) -> None:
        with pytest.raises(frames.ProtocolError, match="masking"):
            frames.parse_client_frame(frames.text_frame('{"type":"ping"}')[:2], 1024)

    @pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
    def test_rsv_bits_are_refused_without_an_extension(self, rsv: int) -> None:
        with pytest.raises(frames.ProtocolError, match="reserved bits"):
            frames.parse_client_frame(_unchecked(frames.OP_TEXT, b"{}", rsv=rsv), 1024)

    @pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
    def test_unknown_opcodes_are_refused_from_the_first_bytes(self, opcode: int) -> None:
        with pytest.raises(frames.ProtocolError, match="opcode"):
            frames.parse_client_frame(_unchecked(opcode, b"x")[:2], 1024)

    @pytest.mark.parametrize("opcode", [frames.OP_CLOSE, frames.OP_PING, frames.OP_PONG])
    def test_a_fragmented_control_frame_is_refused(self, opcode: int) -> None:
        with pytest.raises(frames.ProtocolError, match="fragmented"):
            frames.parse_client_frame(_unchecked(opcode, b"\x03\xe8", fin=False), 1024)

    @pytest.mark.parametrize("size", [126, 1000, 70_000])
    def test_a_control_frame_over_125_bytes_is_refused(self, size: int) -> None:
        for opcode in (frames.OP_PING, frames.OP_PONG, frames.OP_CLOSE):
            with pytest.raises(frames.ProtocolError, match="control frame too long"):
                frames.parse_client_frame(_unchecked(opcode, b"p" * size), 1 << 20)


class TestCloseFrames:
    @pytest.mark.parametrize("prefix", range(4))
    @pytest.mark.parametrize("char", ["é", "€", "😀"])
    def test_a_long_reason_is_cut_between_characters(self, prefix: int, char: str) -> None:
        reason = "x" * prefix + char * 80
        wire = frames.close_frame(1013, reason, mask=True)
        found = frames.parse_client_frame(wire, 1024)
        assert found is not None and found[0].opcode == frames.OP_CLOSE
        payload = bytes(found[0].data)
        assert int.from_bytes(payload[:2], "big") == 1013
        text = payload[2:].decode()  # strict: a split character raises here
        assert len(payload[2:]) <= 123 and reason.startswith(text)
        assert len(text.encode()) > 123 - len(char.encode())  # cut no shorter than it must be

    def test_a_short_reason_is_sent_whole(self) -> None:
        wire = frames.close_frame(1012, "session moved to worker w-1; reconnect")
        assert wire[4:] == b"session moved to worker w-1; reconnect"


class TestFrameCursor:
    def test_boundaries_are_found_however_the_stream_is_cut(self) -> None:
        rng = random.Random(7)
        messages = [
            frames.frame(frames.OP_BINARY, os.urandom(rng.choice([0, 3, 125, 126, 300, 70_000])))
            for _ in range(40)
        ]
        stream = b"".join(messages)
        ends = set()
        total = 0
        for m in messages:
            total += len(m)
            ends.add(total)
        for _ in range(20):
            cursor = frames.FrameCursor()
            pos = 0
            while pos < len(stream):
                step = rng.choice([1, 2, 7, 100, 5000, 100_000])
                cursor.feed(stream[pos : pos + step])
                pos = min(len(stream), pos + step)
                assert cursor.at_boundary == (pos in ends), pos
            assert not cursor.closed

    @pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536])
    def test_one_whole_frame_per_read_keeps_the_boundary(self, size: int) -> None:
        cursor = frames.FrameCursor()
        for _ in range(3):
            cursor.feed(frames.frame(frames.OP_BINARY, b"y" * size))
            assert cursor.at_boundary and not cursor.closed
        cursor.feed(frames.frame(frames.OP_BINARY, b"y" * size)[:-1] if size else b"\x82")
        assert not cursor.at_boundary
        cursor.feed(b"y" if size else b"\x00")
        assert cursor.at_boundary
        cursor.feed(frames.close_frame(1001, "going away"))
        assert cursor.closed and cursor.at_boundary

    def test_a_close_frame_is_noticed(self) -> None:
        cursor = frames.FrameCursor()
        cursor.feed(frames.text_frame("hi") + frames.close_frame(1000, "bye")[:1])
        assert not cursor.closed and not cursor.at_boundary
        cursor.feed(frames.close_frame(1000, "bye")[1:])
        assert cursor.closed and cursor.at_boundary
