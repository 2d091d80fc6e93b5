"""Both public ports, the router's and the worker's, held to the same edge rules over raw sockets:
a head too large is 431 however it arrives, a client's forged or repeated internal header is
the client's mistake (400, or simply dropped by a router), and a private HTTP app that does not
answer is 503 with a line in the log, never a traceback and a cut connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from contract.edge.private_socket import PrivateSocket
from router.server import Router, run_router
from router.settings import RouterSettings
from tests.support import RunningWorker, run_worker, settings_for
from worker.settings import StorageSettings

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(target: str, *extra: str) -> bytes:
    lines = [
        f"GET {target} HTTP/1.1",
        "Host: edge",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def answer(port: int, request: bytes) -> bytes:
    """Everything the server sends back before it closes, or within 5 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        received = bytearray()
        with anyio.move_on_after(5):
            while chunk := await reader.read(65536):
                received += chunk
                if b"\r\n\r\n" in received and not received.startswith(b"HTTP/1.1 101"):
                    end = received.index(b"\r\n\r\n") + 4
                    length = _content_length(bytes(received[:end]))
                    if length is not None and len(received) >= end + length:
                        break
                if (
                    received.startswith(b"HTTP/1.1 101")
                    and len(received) > received.index(b"\r\n\r\n") + 4
                ):
                    break  # the upgrade and the server's first frame
        return bytes(received)
    finally:
        writer.close()


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


@dataclass
class Edges:
    worker: RunningWorker
    router: Router

    def ports(self) -> dict[str, int]:
        return {"worker": self.worker.settings.port, "router": self.router.port}


@asynccontextmanager
async def edges(tmp_path: Path) -> AsyncIterator[Edges]:
    settings = settings_for(StorageSettings(storage_dir=tmp_path / "storage"))
    async with run_worker(settings) as worker, anyio.create_task_group() as tg:
        config = RouterSettings(
            host="127.0.0.1",
            port=0,
            workers=(("127.0.0.1", settings.port),),
            health_interval_ms=200,
        )
        router: Router = await tg.start(
            lambda task_status: run_router(config, task_status=task_status)
        )
        try:
            yield Edges(worker, router)
        finally:
            tg.cancel_scope.cancel()


def status(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:200]
    return int(raw[9:12])


class TestHeadLimit:
    @pytest.mark.parametrize("program", ["worker", "router"])
    @pytest.mark.parametrize("kind", ["websocket", "http"])
    async def test_a_complete_head_over_64_kib_in_one_read_is_431(
        self, tmp_path: Path, program: str, kind: str
    ) -> None:
        # 100 lines of 1 KB: no line is over websockets' own 8 KiB line limit.
        big = "\r\n".join(f"X-Big-{i}: " + "y" * 1000 for i in range(100))
        request = (
            upgrade("/yjs/s/a.txt", big)
            if kind == "websocket"
            else f"GET /healthz HTTP/1.1\r\nHost: edge\r\n{big}\r\n\r\n".encode()
        )
        async with edges(tmp_path) as e:
            raw = await answer(e.ports()[program], request)
            assert status(raw) == 431, raw[:200]
            # and the program serves on
            assert status(await answer(e.ports()[program], b"GET /healthz HTTP/1.1\r\n\r\n")) == 200


class TestInternalHeaders:
    @pytest.mark.parametrize(
        ("target", "header"),
        [
            ("/yjs/s/a.txt", "X-Collab-Router"),
            ("/", "X-Collab-Session"),
            ("/ws", "X-Collab-Router"),
        ],
    )
    async def test_a_repeated_internal_header_at_a_worker_is_a_400_never_a_500(
        self, tmp_path: Path, target: str, header: str
    ) -> None:
        async with edges(tmp_path) as e:
            raw = await answer(
                e.worker.settings.port, upgrade(target, f"{header}: a", f"{header}: b")
            )
            assert status(raw) == 400, raw[:300]
            assert f"the {header.lower()} header must be sent once".encode() in raw.lower()

    async def test_a_client_speaking_for_a_router_is_routed_like_any_other(
        self, tmp_path: Path
    ) -> None:
        """The router drops the client's X-Collab-* headers before adding its own, so the
        worker sees one X-Collab-Router and serves the connection (it was a 500 that the
        router turned into 1013)."""
        async with edges(tmp_path) as e:
            raw = await answer(
                e.router.port,
                upgrade("/yjs/s/a.txt", "X-Collab-Router: forged", "X-Collab-Session: other"),
            )
            assert raw.startswith(b"HTTP/1.1 101 "), raw[:300]
            frame = raw[raw.index(b"\r\n\r\n") + 4 :]
            assert frame[:1] == b"\x82", frame[:20]  # the worker's sync step 1, not a close
            refused = await answer(e.router.port, upgrade("/yjs/s/a.txt", "Origin: a", "Origin: b"))
            assert status(refused) == 400


class TestPrivateSocketDown:
    @pytest.mark.parametrize("program", ["worker", "router"])
    async def test_an_http_app_that_does_not_answer_is_a_503(
        self, tmp_path: Path, program: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        async with edges(tmp_path) as e:
            listener = e.worker.server.listener
            assert listener is not None
            relay = e.router.proxy.http_relay if program == "router" else listener.relay
            assert relay is not None
            working = relay.private
            relay.private = PrivateSocket("collab-nobody-listens")  # a socket never bound
            try:
                raw = await answer(e.ports()[program], b"GET /healthz HTTP/1.1\r\n\r\n")
            finally:
                relay.private = working
            assert status(raw) == 503 and b"HTTP app not answering" in raw
            assert status(await answer(e.ports()[program], b"GET /healthz HTTP/1.1\r\n\r\n")) == 200
        logged = capsys.readouterr()
        assert "http_relay_failed" in logged.out + logged.err
        assert "Traceback" not in logged.out + logged.err
