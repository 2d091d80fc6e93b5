"""The Node test client against a bare pycrdt-websocket server: the harness itself works.

If these fail, interop failures elsewhere are about the client, not the worker.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
import uvicorn
from pycrdt import Map
from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom

from bench.servers.pycrdt_bare import BareWebsocketServer
from tests.jsclient import js_client, requires_node, run_js_client
from tests.support import wait_until

pytestmark = [pytest.mark.node, requires_node]


def _listen(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class _Server(BareWebsocketServer):
    """The benchmark's bare server (rooms opened one at a time, or simultaneous first clients can
    hang). pycrdt-websocket 0.16.5 also never closes a room's update stream when the room stops,
    which `filterwarnings = error` turns into a failure: close them ourselves."""

    seen: list[YRoom]

    async def get_room(self, name: str) -> YRoom:
        room = await super().get_room(name)
        if room not in self.seen:
            self.seen.append(room)
        return room

    def close_streams(self) -> None:
        for room in self.seen:
            for stream in ("_update_send_stream", "_update_receive_stream"):
                if hasattr(room, stream):
                    getattr(room, stream).close()


@asynccontextmanager
async def bare_pycrdt(port: int = 0) -> AsyncIterator[tuple[str, WebsocketServer]]:
    """pycrdt-websocket's ASGIServer on uvicorn in this process; yields (ws URL, server)."""
    sock = _listen(port)
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/yjs"
    websocket_server = _Server()
    websocket_server.seen = []
    config = uvicorn.Config(
        ASGIServer(websocket_server),
        lifespan="off",
        log_level="warning",
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    try:
        async with websocket_server, anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            await wait_until(lambda: server.started, 10, "pycrdt-websocket server started")
            try:
                yield url, websocket_server
            finally:
                server.should_exit = True
    finally:
        websocket_server.close_streams()


class TestNodeClientAgainstBarePycrdt:
    async def test_two_clients_converge(self) -> None:
        """Two clients editing one document concurrently both end with the same merged text."""
        async with bare_pycrdt() as (url, _):
            results: dict[str, dict[str, object]] = {}

            async def edit(name: str, text: str) -> None:
                results[name] = await run_js_client(
                    url,
                    "S/src/a.py",
                    insert=text,
                    expect_contains=["hello", "world"],
                    hold_ms=300,
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(edit, "a", "hello")
                tg.start_soon(edit, "b", "world")

        assert results["a"]["text"] == results["b"]["text"]
        assert sorted(str(results["a"]["text"])) == sorted("helloworld")
        assert results["a"]["synced"] is True and results["a"]["reconnects"] == 0

    async def test_index_mode_reads_the_files_map(self) -> None:
        """`--index` reads the session document's `files` map."""
        async with bare_pycrdt() as (url, websocket_server):
            room = await websocket_server.get_room("/yjs/S")
            files = room.ydoc.get("files", type=Map)
            files["src/a.py"] = {"size": 1}
            files["README.md"] = {"size": 2}
            result = await run_js_client(url, "S", index=True, expect_contains=["src/a.py"])
        assert result["keys"] == ["README.md", "src/a.py"]
        assert result["files"]["src/a.py"] == {"size": 1}

    async def test_expectation_timeout_is_an_error(self) -> None:
        """A text that never arrives fails with the reason, not a hang."""
        async with bare_pycrdt() as (url, _):
            with pytest.raises(AssertionError, match="timeout after 500 ms"):
                await run_js_client(url, "S/a.py", expect="never", timeout_ms=500)

    async def test_interactive_client_reconnects_across_a_server_restart(self) -> None:
        """y-websocket reconnects on its own and re-syncs its state into the restarted server."""
        async with anyio.create_task_group() as tg:
            first_stop, first_gone = anyio.Event(), anyio.Event()
            url = await tg.start(_serve_until, 0, first_stop, first_gone)
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            async with js_client(url, "S/a.py") as client:
                await client.insert("before ")
                seen = await run_js_client(url, "S/a.py", expect_contains=["before"])
                assert seen["text"] == "before "

                first_stop.set()
                await first_gone.wait()
                # Same port, new empty server: only the live client still holds "before ".
                second_stop = anyio.Event()
                await tg.start(_serve_until, port, second_stop, anyio.Event())
                state = await client.wait(expect_contains=["before"], timeout_ms=10_000)
                assert state["reconnects"] == 1
                await client.insert("after")
                seen = await run_js_client(url, "S/a.py", expect_contains=["before after"])
                assert seen["text"] == "before after"
            second_stop.set()


async def _serve_until(
    port: int,
    stop: anyio.Event,
    gone: anyio.Event,
    *,
    task_status: anyio.abc.TaskStatus[str],
) -> None:
    try:
        async with bare_pycrdt(port) as (url, _):
            task_status.started(url)
            await stop.wait()
    finally:
        gone.set()
