"""Stand-in workers and a raw client for router tests (tests/router/test_proxy_*.py).

The workers are real TCP servers on loopback: they answer ``/readyz`` as ready and answer each
upgrade with whatever the test gives them, which our workers never would (a 101 with the wrong
accept key, garbage). The client speaks raw RFC 6455 so tests can send what no library would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from router import frames, handshake
from router.server import Router, run_router
from router.settings import RouterSettings
from tests.support import wait_until

# The router's upgrade request head -> the bytes sent back (a list: in pieces, a moment apart).
Answer = Callable[[bytes], bytes | list[bytes]]


def request_key(head: bytes) -> str:
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            return value.strip()
    raise AssertionError(f"no Sec-WebSocket-Key in {head!r}")


def accept(head: bytes) -> bytes:
    """What a worker answers: a 101 for the key it was sent."""
    return handshake.switching_protocols(request_key(head))


@dataclass
class Upgrade:
    """One upgrade connection a worker received from the router."""

    head: bytes  # the request head, as received
    received: bytearray = field(default_factory=bytearray)  # every byte after it
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # the router hung up


class FakeWorker:
    """A worker stand-in named ``name``: ready on ``/readyz``, ``answer`` to every upgrade."""

    def __init__(self, name: str, answer: Answer = accept) -> None:
        self.name = name
        self.answer = answer
        self.upgrades: list[Upgrade] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> FakeWorker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        await wait_until(lambda: not self._writers, 5, "fake worker connections closed")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /readyz "):
                body = json.dumps({"state": "ready", "worker": self.name}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
                return
            upgrade = Upgrade(head)
            self.upgrades.append(upgrade)
            reply = self.answer(head)
            for piece in [reply] if isinstance(reply, bytes) else reply:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.02)
            try:
                while data := await reader.read(65536):
                    upgrade.received += data
            finally:
                upgrade.closed.set()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._writers.discard(writer)


@asynccontextmanager
async def routing(*workers: FakeWorker, **settings: Any) -> AsyncIterator[Router]:
    """A real router in front of ``workers``, once every one of them is on its ring."""
    config = RouterSettings(
        host="127.0.0.1",
        port=0,
        workers=tuple(("127.0.0.1", w.port) for w in workers),
        health_interval_ms=200,
        **settings,
    )
    async with anyio.create_task_group() as tg:
        router: Router = await tg.start(
            lambda task_status: run_router(config, task_status=task_status)
        )
        await wait_until(lambda: len(router.membership.ring) == len(workers), 5, "ring")
        try:
            yield router
        finally:
            tg.cancel_scope.cancel()


class RawClient:
    """A WebSocket client on a bare socket: sends any bytes, reads the server's frames."""

    KEY = "dGhlIHNhbXBsZSBub25jZQ=="

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int, target: str = "/") -> AsyncIterator[RawClient]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: router\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {cls.KEY}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101 "), head
            assert f"Sec-WebSocket-Accept: {handshake.accept_key(cls.KEY)}".encode() in head
            yield cls(reader, writer)
        finally:
            writer.close()

    def send(self, wire: bytes) -> None:
        self.writer.write(wire)

    def send_text(self, message: dict[str, Any] | str) -> bytes:
        """One masked text frame; returns its bytes as sent."""
        text = message if isinstance(message, str) else json.dumps(message)
        wire = frames.frame(frames.OP_TEXT, text.encode(), mask=True)
        self.send(wire)
        return wire

    async def frame(self) -> tuple[int, bytes]:
        """The next (opcode, payload) from the router; server frames are never masked."""
        head = await asyncio.wait_for(self.reader.readexactly(2), 5)
        assert not head[1] & 0x80, "a server masked its frame"
        n = head[1] & 0x7F
        if n >= 126:
            n = int.from_bytes(await self.reader.readexactly(2 if n == 126 else 8), "big")
        return head[0] & 0x0F, await asyncio.wait_for(self.reader.readexactly(n), 5)

    async def message(self) -> dict[str, Any]:
        opcode, payload = await self.frame()
        assert opcode == frames.OP_TEXT, (opcode, payload)
        parsed: dict[str, Any] = json.loads(payload)
        return parsed

    async def closed(self) -> tuple[int, str]:
        """The close frame's code and reason (what comes before it must be none)."""
        opcode, payload = await self.frame()
        assert opcode == frames.OP_CLOSE, (opcode, payload)
        return int.from_bytes(payload[:2], "big"), payload[2:].decode()


def upstream_errors(router: Router) -> float:
    return router.metrics.registry.get_sample_value("collab_router_upstream_errors_total") or 0.0


def client_errors(router: Router, reason: str) -> float:
    registry = router.metrics.registry
    value = registry.get_sample_value("collab_router_client_errors_total", {"reason": reason})
    return value or 0.0


def wrong_accept(head: bytes) -> bytes:
    return handshake.switching_protocols("AAAAAAAAAAAAAAAAAAAAAA==")  # a valid 101 for another key


def without(header: str) -> Answer:
    def answer(head: bytes) -> bytes:
        lines = handshake.switching_protocols(request_key(head)).split(b"\r\n")
        return b"\r\n".join(line for line in lines if not line.startswith(header.encode()))

    return answer


JOIN = {"type": "join", "sessionId": "s", "userId": "u"}


async def refused_after_join(router: Router, target: str) -> tuple[int, str]:
    """The close a client gets from the router on ``target`` (a JSON join on ``/``)."""
    async with RawClient.connect(router.port, target) as client:
        if target == "/":
            client.send_text(JOIN)
            error = await client.message()
            assert error["type"] == "error" and error["error"] == "Session unavailable", error
        return await client.closed()
