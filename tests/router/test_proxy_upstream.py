"""The router as its workers' WebSocket client: what it accepts from a worker's handshake.

The workers here are stand-ins, real TCP servers on loopback: they answer ``/readyz`` as ready
and answer each upgrade with whatever the test gives them, which our workers never would (a
101 with the wrong accept key, garbage). The router is a real one, in this event loop.
"""

from __future__ import annotations

import asyncio

import pytest
import structlog

from router import frames, handshake
from tests.router.fakes import (
    JOIN,
    Answer,
    FakeWorker,
    RawClient,
    client_errors,
    refused_after_join,
    request_key,
    routing,
    upstream_errors,
    without,
    wrong_accept,
)
from tests.support import wait_until


class TestWorkerHandshake:
    @pytest.mark.parametrize("target", ["/", "/yjs/s/a.txt"])
    @pytest.mark.parametrize(
        ("answer", "error"),
        [
            pytest.param(wrong_accept, "Sec-WebSocket-Accept", id="wrong-accept"),
            pytest.param(without("Upgrade:"), "Upgrade: websocket", id="no-upgrade"),
            pytest.param(without("Connection:"), "Connection: Upgrade", id="no-connection"),
        ],
    )
    async def test_a_101_that_does_not_complete_the_upgrade_is_an_upstream_failure(
        self, target: str, answer: Answer, error: str
    ) -> None:
        """The worker's accept value must be the one for the key the router sent (the JSON
        path's own key, the client's key on the Yjs path), with Upgrade and Connection."""
        async with FakeWorker("w-odd", answer) as worker, routing(worker) as router:
            with structlog.testing.capture_logs() as logs:
                code, reason = await refused_after_join(router, target)
            assert code == 1013
            assert reason == "worker w-odd answered an invalid handshake; reconnect"
            assert upstream_errors(router) == 1
            failed = [e for e in logs if e["event"] == "upstream_failed"]
            assert len(failed) == 1 and error in failed[0]["error"], logs
            assert failed[0]["worker"] == "w-odd"
            await asyncio.wait_for(worker.upgrades[0].closed.wait(), 5)
            assert worker.upgrades[0].received == b""  # the client's frames never reached it

    @pytest.mark.parametrize("target", ["/", "/yjs/s/a.txt"])
    @pytest.mark.parametrize(
        "garbage",
        [
            pytest.param(b"garbage\r\n\r\n", id="not-http"),
            pytest.param(b"\x16\x03\x01\x02\x00\r\n\r\n", id="tls"),
            pytest.param(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade websocket\r\n\r\n",
                id="header-without-colon",
            ),
        ],
    )
    async def test_a_malformed_answer_is_never_answered_and_counts_against_the_worker(
        self, target: str, garbage: bytes
    ) -> None:
        """Reading a worker's head writes nothing to the worker: an HTTP 400 is an answer to
        a client's request, and a worker that answers garbage is the router's upstream error,
        not a client's."""
        async with FakeWorker("w-bad", lambda head: garbage) as worker, routing(worker) as router:
            with structlog.testing.capture_logs() as logs:
                code, reason = await refused_after_join(router, target)
            assert (code, reason) == (1013, "worker w-bad did not answer; reconnect")
            await asyncio.wait_for(worker.upgrades[0].closed.wait(), 5)
            assert worker.upgrades[0].received == b""
            assert upstream_errors(router) == 1
            assert client_errors(router, "bad_request") == 0
            failed = [e for e in logs if e["event"] == "upstream_failed"]
            assert len(failed) == 1 and "malformed handshake response" in failed[0]["error"]

    async def test_a_101_split_over_reads_with_frames_behind_it_is_relayed(self) -> None:
        """The worker's first frame may arrive with its 101, and the 101 in pieces."""

        def slow(head: bytes) -> list[bytes]:
            wire = handshake.switching_protocols(request_key(head))
            wire += frames.text_frame('{"type":1}')
            return [wire[:10], wire[10:-3], wire[-3:]]

        async with FakeWorker("w-0", slow) as worker, routing(worker) as router:
            async with RawClient.connect(router.port) as client:
                sent = client.send_text(JOIN)
                assert await client.message() == {"type": 1}
                await wait_until(lambda: bytes(worker.upgrades[0].received) == sent)
            assert upstream_errors(router) == 0
