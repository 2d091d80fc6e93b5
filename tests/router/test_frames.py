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

    def test_a_head_split_over_many_reads_is_read_once_it_is_whole(self) -> None:
        raw = (
            b"GET /yjs/s HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Protocol: a,\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x80"
        )
        buffer, head = bytearray(), None
        while head is None:
            buffer.append(raw[len(buffer)])
            head = frames.parse_head(buffer)
        assert len(buffer) == len(raw) - 2  # whole at its blank line, before the frame bytes
        assert head.first_line == "GET /yjs/s HTTP/1.1" and head.size == len(raw) - 2
        assert head.headers[:2] == (("host", "h"), ("sec-websocket-protocol", "a,"))

    def test_a_response_head_is_read_up_to_the_frames_after_it(self) -> None:
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        raw = frames.switching_protocols(key)
        head = frames.parse_head(raw + frames.text_frame("hi"), response=True)
        assert head is not None and head.size == len(raw)
        assert (head.status, head.first_line) == (101, "HTTP/1.1 101 Switching Protocols")
        busy = b"HTTP/1.1 503 Unavailable\r\nContent-Length: 9\r\n\r\n"
        refused = frames.parse_head(busy + b"overloa", response=True)
        assert refused is not None and refused.status == 503 and refused.size == len(busy)

    @pytest.mark.parametrize(
        "raw",
        [
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\n X-Folded: header\r\n\r\n",
            b"x" * 70_000,
            b"GET / HTTP/1.1\r\nX-Long: " + b"y" * 70_000,
        ],
    )
    def test_malformed_request_heads_are_refused_with_a_reason(self, raw: bytes) -> None:
        with pytest.raises(frames.HandshakeError):
            frames.parse_head(raw)

    @pytest.mark.parametrize(
        "raw",
        [
            b"garbage\r\n\r\n",
            b"\x16\x03\x01\x02\x00 x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/2 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade websocket\r\n\r\n",
        ],
    )
    def test_malformed_response_heads_are_refused_with_a_reason(self, raw: bytes) -> None:
        with pytest.raises(frames.HandshakeError):
            frames.parse_head(raw, response=True)

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
        selected = frames.parse_head(frames.switching_protocols(key, "hdr.pay.sig"), response=True)
        plain = frames.parse_head(frames.switching_protocols(key), response=True)
        assert selected is not None and plain is not None
        assert selected.status == 101 and selected.header("sec-websocket-protocol") == "hdr.pay.sig"
        assert plain.status == 101 and plain.header("sec-websocket-protocol") is None

    def test_a_workers_101_must_carry_the_accept_value_of_the_key_sent(self) -> None:
        request, accept = frames.upgrade_request("/", "w:1")
        sent = frames.parse_head(request)
        assert sent is not None
        key = frames.check_client_handshake(sent)
        good = frames.parse_head(frames.switching_protocols(key), response=True)
        other = frames.parse_head(frames.switching_protocols("x" * 24), response=True)
        assert good is not None and other is not None
        frames.check_upgrade_response(good, accept)
        with pytest.raises(frames.HandshakeError, match="Sec-WebSocket-Accept"):
            frames.check_upgrade_response(other, accept)

    @pytest.mark.parametrize(
        ("drop", "match"),
        [("Upgrade", "Upgrade: websocket"), ("Connection", "Connection: Upgrade")],
    )
    def test_a_workers_101_must_say_it_upgrades_to_websocket(self, drop: str, match: str) -> None:
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        lines = frames.switching_protocols(key).split(b"\r\n")
        raw = b"\r\n".join(line for line in lines if not line.startswith(drop.encode()))
        head = frames.parse_head(raw, response=True)
        assert head is not None
        with pytest.raises(frames.HandshakeError, match=match):
            frames.check_upgrade_response(head, frames.accept_key(key))


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
        wire = frames.frame(frames.OP_TEXT, b"x" * 2000, mask=True)
        with pytest.raises(frames.FrameTooLarge):
            frames.parse_frame(wire[:4], 1024)

    @pytest.mark.parametrize("size", [0, 125])
    def test_control_frames_up_to_125_bytes_are_read(self, size: int) -> None:
        for opcode in (frames.OP_PING, frames.OP_PONG, frames.OP_CLOSE):
            parsed = frames.parse_frame(frames.frame(opcode, b"p" * size, mask=True), 1024)
            assert parsed is not None and parsed.opcode == opcode and parsed.payload == b"p" * size

    def test_a_fragmented_message_is_read_frame_by_frame(self) -> None:
        first = frames.frame(frames.OP_TEXT, b"he", mask=True)
        first = bytes([first[0] & 0x7F]) + first[1:]  # FIN clear
        parsed = frames.parse_frame(first + frames.frame(frames.OP_CONT, b"y", mask=True), 64)
        assert parsed is not None and (parsed.fin, parsed.opcode, parsed.payload) == (
            False,
            frames.OP_TEXT,
            b"he",
        )


def _with_first_byte(wire: bytes, b0: int) -> bytes:
    return bytes([b0]) + wire[1:]


class TestClientFrameRules:
    """What RFC 6455 has a server refuse, refused from the frame's first two bytes (1002)."""

    def test_an_unmasked_client_frame_is_refused(self) -> None:
        with pytest.raises(frames.ProtocolError, match="masked"):
            frames.parse_frame(frames.text_frame('{"type":"ping"}')[:2], 1024)

    @pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
    def test_rsv_bits_are_refused_without_an_extension(self, rsv: int) -> None:
        wire = frames.frame(frames.OP_TEXT, b"{}", mask=True)
        with pytest.raises(frames.ProtocolError, match="RSV"):
            frames.parse_frame(_with_first_byte(wire, wire[0] | rsv)[:2], 1024)

    @pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
    def test_unknown_opcodes_are_refused(self, opcode: int) -> None:
        with pytest.raises(frames.ProtocolError, match="opcode"):
            frames.parse_frame(frames.frame(opcode, b"x", mask=True)[:2], 1024)

    @pytest.mark.parametrize("opcode", [frames.OP_CLOSE, frames.OP_PING, frames.OP_PONG])
    def test_a_fragmented_control_frame_is_refused(self, opcode: int) -> None:
        wire = frames.frame(opcode, b"\x03\xe8", mask=True)
        with pytest.raises(frames.ProtocolError, match="fragmented"):
            frames.parse_frame(_with_first_byte(wire, wire[0] & 0x7F)[:2], 1024)

    @pytest.mark.parametrize("size", [126, 1000, 70_000])
    def test_a_control_frame_over_125_bytes_is_refused(self, size: int) -> None:
        for opcode in (frames.OP_PING, frames.OP_PONG, frames.OP_CLOSE):
            wire = frames.frame(opcode, b"p" * size, mask=True)
            with pytest.raises(frames.ProtocolError, match="125"):
                frames.parse_frame(wire[:2], 1 << 20)


class TestCloseFrames:
    @pytest.mark.parametrize("prefix", range(4))
    @pytest.mark.parametrize("char", ["é", "€", "😀"])
    def test_a_long_reason_is_cut_between_characters(self, prefix: int, char: str) -> None:
        reason = "x" * prefix + char * 80
        wire = frames.close_frame(1013, reason, mask=True)
        parsed = frames.parse_frame(wire, 1024)
        assert parsed is not None and parsed.opcode == frames.OP_CLOSE
        assert int.from_bytes(parsed.payload[:2], "big") == 1013
        text = parsed.payload[2:].decode()  # strict: a split character raises here
        assert len(parsed.payload[2:]) <= 123 and reason.startswith(text)
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
