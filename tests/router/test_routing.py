"""Through a router to three workers: placement, both protocols, and the router's own answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from router.server import run_router
from router.settings import RouterSettings
from tests.pool import TOKEN, pool
from tests.s3server import free_port
from tests.support import JsonClient, WorkerProcess, YjsClient, eventually, wait_until


async def join_owner(url: str, session: str) -> str:
    async with JsonClient.connect(url) as c:
        joined = await c.join(session, "u")
        assert joined["sessionId"] == session
        owner: str = joined["containerId"]
        return owner


class TestPlacement:
    async def test_sessions_spread_over_all_workers_and_stay_put(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 3) as p:
            sessions = [f"spread-{i}" for i in range(30)]
            first = {s: await join_owner(p.url, s) for s in sessions}
            assert set(first.values()) == {"w-0", "w-1", "w-2"}
            assert all(first[s] == p.owner(s) for s in sessions)
            again = {s: await join_owner(p.url, s) for s in sessions[:10]}
            assert again == {s: first[s] for s in sessions[:10]}
            assert p.metric("collab_router_routed_total", worker="w-0") > 0

    async def test_two_routers_with_the_same_workers_agree_without_talking(
        self, tmp_path: Path
    ) -> None:
        async with pool(tmp_path, 3) as p:
            # The second router is a separate `python -m router` process (on uvloop).
            workers = ",".join(f"{host}:{port}" for host, port in p.addresses)
            other = WorkerProcess(
                {"WORKERS": workers, "ADMIN_TOKEN": TOKEN, "COLLAB_HOST": "127.0.0.1"},
                log=tmp_path / "router-2.log",
                module="router",
            )
            await other.start()
            try:
                for i in range(12):
                    session = f"agree-{i}"
                    assert await join_owner(p.url, session) == await join_owner(other.url, session)
                async with YjsClient.connect(other.url, "agree-0/a.txt") as y:
                    await asyncio.wait_for(y.synced.wait(), 5)
            finally:
                assert await other.stop() == 0

    async def test_both_protocols_reach_the_same_session_on_its_owner(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 3) as p:
            async with (
                YjsClient.connect(p.url, "both/a.txt") as y,
                JsonClient.connect(p.url, "/ws") as j,
            ):
                await asyncio.wait_for(y.synced.wait(), 5)
                await y.insert(0, "from yjs ")
                joined = await j.join("both", "json-user")
                assert joined["containerId"] == p.owner("both")

                async def has_yjs_text() -> bool:
                    return await j.get_file("a.txt") == "from yjs "

                await eventually(has_yjs_text, 5, "the Yjs edit visible over JSON")
                await j.file_op(type="update", path="a.txt", content="from yjs and json")
                await y.wait_text("from yjs and json")
            live = await p.admin("GET", "/admin/sessions/both")
            assert live["owner"] == p.owner("both")


class TestBeforeTheJoin:
    async def test_messages_before_a_join_get_the_workers_answers(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 2) as p, JsonClient.connect(p.url) as c:
            assert (await c.request({"type": "ping"}, "pong"))["type"] == "pong"
            await c.send("{not json")
            assert (await c.recv("error"))["error"] == "Invalid message format"
            await c.send({"type": "getFiles"})
            assert (await c.recv("error"))["error"] == "Not joined to a session"
            await c.send({"type": "join", "userId": "u"})
            assert (await c.recv("error"))["error"] == "Missing sessionId or userId"
            await c.send({"type": "join", "sessionId": "../etc", "userId": "u"})
            assert (await c.recv("error"))["error"] == "Invalid sessionId"
            await c.send({"type": "bogus"})
            assert (await c.recv("error"))["error"] == "Unknown message type"
            # ...and the connection still joins afterwards, on the right worker.
            joined = await c.join("after-errors", "u")
            assert joined["containerId"] == p.owner("after-errors")

    async def test_a_join_split_over_fragments_reaches_the_worker(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 2) as p:
            async with websockets.connect(p.url + "/") as ws:
                message = json.dumps({"type": "join", "sessionId": "frag", "userId": "u"})
                await ws.send(iter([message[:10], message[10:30], message[30:]]))
                joined = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert joined["type"] == "joined" and joined["containerId"] == p.owner("frag")

    async def test_an_oversize_first_message_is_refused_with_1009(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 1, max_message_bytes=4096) as p:
            async with websockets.connect(p.url + "/", max_size=None) as ws:
                await ws.send("x" * 10_000)
                error = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert "4096-byte limit" in error["reason"]
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


class TestRouterEdges:
    async def test_bad_clients_get_clear_answers_and_the_router_keeps_serving(
        self, tmp_path: Path
    ) -> None:
        async with pool(tmp_path, 1) as p:
            upgrade = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            for raw in (
                b"\x16\x03\x01 not http at all\r\n\r\n",  # plain HTTP: the router's app says 400
                b"GET /yjs/s HTTP/1.1\r\n" + upgrade + b"\r\n",  # no key: bad_handshake
                b"GET / HTTP/1.1\r\n" + upgrade + b"broken header\r\n\r\n",  # bad_request
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", p.router.port)
                writer.write(raw)
                answer = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                assert answer.startswith(b"HTTP/1.1 400"), answer
            # half a request, then gone
            _, writer = await asyncio.open_connection("127.0.0.1", p.router.port)
            writer.write(b"GET /yjs/s HTTP/1.1\r\nHost")
            writer.close()
            async with websockets.connect(p.url + "/elsewhere/x") as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert await join_owner(p.url, "still-fine") == "w-0"
            assert p.metric("collab_router_client_errors_total", reason="bad_request") == 1
            assert p.metric("collab_router_client_errors_total", reason="bad_handshake") == 1

    async def test_random_bytes_before_the_join_never_break_the_router(
        self, tmp_path: Path
    ) -> None:
        rng = random.Random(1)
        handshake = (
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        async with pool(tmp_path, 1) as p:
            for _ in range(40):
                blob = rng.randbytes(rng.choice([1, 2, 10, 200, 5000]))
                if rng.random() < 0.5:  # a plausible frame header, then garbage
                    blob = bytes([0x81, 0x80 | min(125, len(blob))]) + blob
                reader, writer = await asyncio.open_connection("127.0.0.1", p.router.port)
                writer.write(handshake + blob)
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await asyncio.wait_for(reader.read(4096), 0.2)
                writer.close()
            assert p.metric("collab_router_client_errors_total", reason="internal") == 0
            assert await join_owner(p.url, "after-fuzz") == "w-0"

    async def test_health_metrics_and_admin_are_served_on_the_same_port(
        self, tmp_path: Path
    ) -> None:
        async with pool(tmp_path, 2) as p, httpx.AsyncClient() as http:
            ready = await http.get(p.http + "/readyz")
            assert ready.status_code == 200 and ready.json()["workers"]["active"] == 2
            assert (await http.get(p.http + "/healthz")).json()["status"] == "ok"
            text = (await http.get(p.http + "/metrics")).text
            for name in (
                "collab_router_connections_active",
                "collab_router_routed_total",
                "collab_router_upstream_errors_total",
                "collab_router_workers",
                "collab_router_handoffs_total",
            ):
                assert name in text
            assert 'collab_router_workers{state="active"} 2.0' in text
            assert (await http.get(p.http + "/admin/workers")).status_code == 401
            wrong = {"authorization": "Bearer nope"}
            assert (await http.get(p.http + "/admin/workers", headers=wrong)).status_code == 401
            workers = await p.admin("GET", "/admin/workers")
            assert [w["id"] for w in workers["workers"]] == ["w-0", "w-1"]
            assert all(w["state"] == "active" and w["onRing"] for w in workers["workers"])
            async with JsonClient.connect(p.url) as c:
                await c.join("listed", "u")
                sessions = await p.admin("GET", "/admin/sessions")
                assert [(s["sessionId"], s["worker"]) for s in sessions["sessions"]] == [
                    ("listed", p.owner("listed"))
                ]
                located = await p.admin("GET", "/admin/sessions/listed")
                assert located["live"] is True and located["owner"] == p.owner("listed")
            assert p.metric("collab_router_connections_active") == 0


class TestRefusingWorker:
    async def test_a_worker_refusing_the_handshake_gives_a_close_reason(
        self, tmp_path: Path
    ) -> None:
        """Our workers always accept and then close with a reason, so the refusing worker here
        is a stand-in: a real HTTP server that is ready but answers every upgrade with 503."""

        async def readyz(request: Request) -> Response:
            return JSONResponse({"state": "ready", "worker": "w-refusing"})

        async def refuse(request: Request) -> Response:
            return PlainTextResponse("overloaded", status_code=503)

        app = Starlette(routes=[Route("/readyz", readyz), Route("/{path:path}", refuse)])
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, ws="none")
        )
        settings = RouterSettings(
            host="127.0.0.1",
            port=free_port(),
            workers=(("127.0.0.1", port),),
            health_interval_ms=200,
        )
        stopped = anyio.Event()

        async def serve() -> None:
            try:
                await server.serve()
            finally:
                stopped.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            await wait_until(lambda: server.started)
            router = await tg.start(run_router, settings)
            url = f"ws://127.0.0.1:{router.port}"
            for path in ("/yjs/s/a.txt", "/"):
                async with websockets.connect(url + path) as ws:
                    if path == "/":
                        await ws.send(json.dumps({"type": "join", "sessionId": "s", "userId": "u"}))
                        error = json.loads(await ws.recv())
                        assert error["error"] == "Session unavailable"
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await ws.recv()
                    assert closed.value.rcvd is not None
                    assert closed.value.rcvd.code == 1013
                    assert (
                        "w-refusing refused the connection (HTTP 503)" in closed.value.rcvd.reason
                    )
            assert (
                router.metrics.registry.get_sample_value("collab_router_upstream_errors_total") == 2
            )
            server.should_exit = True
            await stopped.wait()
            tg.cancel_scope.cancel()
