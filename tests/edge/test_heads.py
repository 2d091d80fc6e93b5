"""The rules every head on a public port is held to (contract.edge.heads)."""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers

from contract.edge import heads


class TestHeadSize:
    def test_a_head_is_measured_once_complete(self) -> None:
        raw = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nbody"
        assert heads.head_end(raw[:10]) is None
        assert heads.head_end(raw) == len(raw) - 4

    def test_a_head_split_over_many_reads_is_measured_once_it_is_whole(self) -> None:
        raw = b"GET /yjs/s HTTP/1.1\r\nHost: h\r\n\r\n\x81\x80"
        buffer, size = bytearray(), None
        while size is None:
            buffer.append(raw[len(buffer)])
            size = heads.head_end(buffer)
        assert size == len(buffer) == len(raw) - 2

    @pytest.mark.parametrize("arrives", ["whole", "in pieces"])
    def test_the_limit_holds_for_a_complete_head_too(self, arrives: str) -> None:
        """A 100 KiB head is refused 431 whether or not its end came in the same read."""
        raw = b"GET / HTTP/1.1\r\nX-Big: " + b"y" * 100_000 + b"\r\n\r\n"
        buffer = bytearray()
        with pytest.raises(heads.HeadTooLarge) as refused:
            for chunk in (
                [raw]
                if arrives == "whole"
                else [raw[i : i + 4096] for i in range(0, len(raw), 4096)]
            ):
                buffer += chunk
                heads.head_end(buffer)
        assert refused.value.status == 431

    def test_a_head_of_exactly_the_limit_is_accepted(self) -> None:
        start = b"GET / HTTP/1.1\r\nX-Fill: "
        raw = start + b"y" * (heads.MAX_HEAD_BYTES - len(start) - 4) + b"\r\n\r\n"
        assert len(raw) == heads.MAX_HEAD_BYTES
        assert heads.head_end(raw + b"more") == heads.MAX_HEAD_BYTES
        with pytest.raises(heads.HeadTooLarge):
            heads.head_end(raw[:-4] + b"y\r\n\r\n")


class TestHeaders:
    def test_a_repeated_header_that_must_have_one_value_is_refused(self) -> None:
        headers = Headers([("X-Collab-Router", "a"), ("x-collab-router", "b")])
        with pytest.raises(heads.RepeatedHeader, match="2 times") as refused:
            heads.single(headers, "X-Collab-Router")
        assert refused.value.status == 400
        assert heads.single(headers, "Origin") is None

    def test_an_upgrade_is_told_from_plain_http_before_parsing(self) -> None:
        assert heads.is_websocket_upgrade(
            b"GET / HTTP/1.1\r\nUPGRADE: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\n"
        )
        assert not heads.is_websocket_upgrade(b"GET /websocket HTTP/1.1\r\nHost: h\r\n\r\n")

    def test_an_answer_is_whole_and_closes_the_connection(self) -> None:
        raw = heads.http_answer(503, "HTTP app not answering; retry")
        assert raw.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Connection: close\r\n" in raw and raw.endswith(
            b"\r\n\r\nHTTP app not answering; retry\n"
        )
