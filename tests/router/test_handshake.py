"""The opening handshake as the router reads it (the client's upgrade) and checks it (a
worker's answer)."""

from __future__ import annotations

import pytest

from contract.edge.heads import HeadError, RepeatedHeader
from router import frames, handshake

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_head(*extra: str, target: str = "/yjs/s/a.py?token=x") -> bytes:
    lines = [
        f"GET {target} HTTP/1.1",
        "Host: h",
        "Upgrade: websocket",
        "Connection: keep-alive, Upgrade",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Key: {KEY}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class TestClientUpgrade:
    def test_accept_key_is_the_rfc_6455_example(self) -> None:
        assert handshake.accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    def test_a_valid_upgrade_is_read_with_its_target_and_key(self) -> None:
        head = upgrade_head()
        upgrade = handshake.read_upgrade(head)
        assert upgrade.path == "/yjs/s/a.py" and upgrade.target == "/yjs/s/a.py?token=x"
        assert upgrade.query == "token=x" and upgrade.key == KEY and upgrade.size == len(head)

    def test_offered_subprotocols_are_read_from_every_header_line(self) -> None:
        upgrade = handshake.read_upgrade(
            upgrade_head("Sec-WebSocket-Protocol: a, b", "sec-websocket-protocol: c")
        )
        assert upgrade.subprotocols == ["a", "b", "c"]

    @pytest.mark.parametrize(
        ("raw", "match"),
        [
            (b"GARBAGE\r\n\r\n", "request line"),
            (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "header line"),
            (b"GET / HTTP/1.1\r\n X-Folded: header\r\n\r\n", "header"),
            (b"POST / HTTP/1.1\r\nHost: h\r\n\r\n", "GET <path> HTTP/1.1"),
            (b"GET / HTTP/1.0\r\nHost: h\r\n\r\n", "GET <path> HTTP/1.1"),
        ],
    )
    def test_malformed_heads_are_refused_with_a_reason(self, raw: bytes, match: str) -> None:
        with pytest.raises(HeadError, match=match) as refused:
            handshake.read_upgrade(raw)
        assert refused.value.status == 400

    def test_a_handshake_without_a_valid_key_is_refused(self) -> None:
        head = upgrade_head().replace(KEY.encode(), b"short")
        with pytest.raises(handshake.HandshakeError, match="16 base64"):
            handshake.read_upgrade(head)

    @pytest.mark.parametrize(
        "repeated", ["Sec-WebSocket-Key: " + KEY, "Host: other", "Origin: a", "User-Agent: b"]
    )
    def test_a_repeated_header_the_router_reads_is_a_400(self, repeated: str) -> None:
        head = upgrade_head(repeated, repeated) if "Key" not in repeated else upgrade_head(repeated)
        with pytest.raises(RepeatedHeader) as refused:
            handshake.read_upgrade(head)
        assert refused.value.status == 400

    def test_a_client_cannot_speak_for_a_router(self) -> None:
        """Client-sent X-Collab-* headers are dropped from what goes to the worker; the
        router's own are the only ones there."""
        head = upgrade_head(
            "X-Collab-Router: evil", "x-collab-session: other", "X-COLLAB-OWNER: w", "X-Other: kept"
        )
        upgrade = handshake.read_upgrade(head)
        sent = upgrade.forwarded(head, (("X-Collab-Router", "r-1"),))
        assert b"evil" not in sent and b"other" not in sent.lower().replace(b"x-other", b"")
        assert b"OWNER" not in sent
        assert sent.count(b"X-Collab-Router: r-1") == 1 and b"X-Other: kept" in sent
        again = handshake.read_upgrade(sent)
        assert again.target == upgrade.target and again.key == KEY


class TestWorkerAnswer:
    def test_an_answer_is_read_up_to_the_frames_after_it(self) -> None:
        raw = handshake.switching_protocols(KEY)
        answer = handshake.read_answer(raw + frames.text_frame("hi"))
        assert answer is not None and answer.size == len(raw)
        assert (answer.status, answer.first_line) == (101, "HTTP/1.1 101 Switching Protocols")
        busy = b"HTTP/1.1 503 Unavailable\r\nContent-Length: 9\r\n\r\n"
        refused = handshake.read_answer(busy + b"overloa")
        assert refused is not None and refused.status == 503 and refused.size == len(busy)
        assert handshake.read_answer(raw[:-1]) is None

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
    def test_malformed_answers_are_refused_with_a_reason(self, raw: bytes) -> None:
        with pytest.raises(HeadError):
            handshake.read_answer(raw)

    def test_a_selected_subprotocol_is_named_in_the_101_and_none_by_default(self) -> None:
        selected = handshake.read_answer(handshake.switching_protocols(KEY, "hdr.pay.sig"))
        plain = handshake.read_answer(handshake.switching_protocols(KEY))
        assert selected is not None and plain is not None
        assert selected.header("sec-websocket-protocol") == "hdr.pay.sig"
        assert plain.header("sec-websocket-protocol") is None

    def test_a_workers_101_must_carry_the_accept_value_of_the_key_sent(self) -> None:
        request, accept = handshake.upgrade_request("/", "w:1")
        key = handshake.read_upgrade(request).key
        good = handshake.read_answer(handshake.switching_protocols(key))
        other = handshake.read_answer(handshake.switching_protocols("x" * 24))
        assert good is not None and other is not None
        handshake.check_upgrade_response(good, accept)
        with pytest.raises(handshake.HandshakeError, match="Sec-WebSocket-Accept"):
            handshake.check_upgrade_response(other, accept)

    @pytest.mark.parametrize(
        ("drop", "match"),
        [("Upgrade", "Upgrade: websocket"), ("Connection", "Connection: Upgrade")],
    )
    def test_a_workers_101_must_say_it_upgrades_to_websocket(self, drop: str, match: str) -> None:
        lines = handshake.switching_protocols(KEY).split(b"\r\n")
        raw = b"\r\n".join(line for line in lines if not line.startswith(drop.encode()))
        answer = handshake.read_answer(raw)
        assert answer is not None
        with pytest.raises(handshake.HandshakeError, match=match):
            handshake.check_upgrade_response(answer, handshake.accept_key(KEY))
