"""The router's WebSocket wire pieces: handshake, frames, and boundary tracking."""

from __future__ import annotations

import os
import random

import pytest

from router import frames


class TestHandshake:
    def test_accept_key_is_the_rfc_6455_example(self) -> None:
        assert frames.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    def test_a_head_is_parsed_once_complete(self) -> None:
        raw = (
            b"GET /yjs/s/a.py?token=x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
            b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nrest"
        )
        assert frames.parse_head(raw[:40]) is None
        head = frames.parse_head(raw)
        assert head is not None
        assert head.path == "/yjs/s/a.py" and head.target == "/yjs/s/a.py?token=x"
        assert head.is_websocket_upgrade
        assert head.size == len(raw) - 4
        assert frames.check_client_handshake(head) == "dGhlIHNhbXBsZSBub25jZQ=="

    @pytest.mark.parametrize(
        "raw",
        [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"x" * 70_000],
    )
    def test_malformed_heads_are_refused_with_a_reason(self, raw: bytes) -> None:
        with pytest.raises(frames.HandshakeError):
            frames.parse_head(raw)

    def test_a_handshake_without_a_valid_key_is_refused(self) -> None:
        head = frames.parse_head(
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n"
        )
        assert head is not None
        with pytest.raises(frames.HandshakeError, match="16 base64"):
            frames.check_client_handshake(head)

    def test_offered_subprotocols_are_read_from_every_header_line(self) -> None:
        head = frames.parse_head(
            b"GET / HTTP/1.1\r\nSec-WebSocket-Protocol: a, b\r\nsec-websocket-protocol: c\r\n\r\n"
        )
        assert head is not None
        assert frames.offered_subprotocols(head) == ["a", "b", "c"]

    def test_a_selected_subprotocol_is_named_in_the_101_and_none_by_default(self) -> None:
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        selected = frames.parse_head(frames.switching_protocols(key, "hdr.pay.sig"))
        plain = frames.parse_head(frames.switching_protocols(key))
        assert selected is not None and plain is not None
        assert selected.status == 101 and selected.header("sec-websocket-protocol") == "hdr.pay.sig"
        assert plain.status == 101 and plain.header("sec-websocket-protocol") is None


class TestFrames:
    @pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 200_000])
    def test_masked_frames_round_trip(self, size: int) -> None:
        payload = os.urandom(size)
        wire = frames.frame(frames.OP_BINARY, payload, mask=True)
        parsed = frames.parse_frame(wire + b"next", 1 << 20)
        assert parsed is not None
        assert (parsed.fin, parsed.opcode, parsed.payload, parsed.size) == (
            True,
            frames.OP_BINARY,
            payload,
            len(wire),
        )
        assert frames.parse_frame(wire[:-1], 1 << 20) is None or size == 0

    def test_an_oversize_frame_is_refused_from_its_header(self) -> None:
        wire = frames.frame(frames.OP_TEXT, b"x" * 2000)
        with pytest.raises(frames.FrameTooLarge):
            frames.parse_frame(wire[:4], 1024)


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
