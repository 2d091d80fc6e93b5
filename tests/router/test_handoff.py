"""Owners change (drain, SIGKILL, a new worker): clients move, nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import signal
import time
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import anyio
import pytest
import websockets

from router import ring
from tests.jsclient import JSClient, js_client, requires_node, run_js_client
from tests.pool import pool, session_on, sessions_owned_by
from tests.support import JsonClient, YjsClient, eventually, wait_until

pytestmark = [pytest.mark.node, requires_node]


async def reconnected(client: JSClient) -> bool:
    """Whether y-websocket has reconnected at least once (reading its events so far)."""
    await client.dump()
    return client.reconnects >= 1


class TestDrain:
    async def test_a_drained_workers_sessions_move_and_every_edit_survives(
        self, tmp_path: Path
    ) -> None:
        names = ["w-0", "w-1", "w-2"]
        moving = sessions_owned_by("w-1", names, 2, "drain")
        staying = [s for s in (f"stay-{i}" for i in range(20)) if ring.owner(s, names) != "w-1"][:1]
        async with pool(tmp_path, 3) as p, AsyncExitStack() as stack:
            clients = {
                s: await stack.enter_async_context(js_client(f"{p.url}/yjs", f"{s}/f.txt"))
                for s in moving + staying
            }
            json_client = await stack.enter_async_context(JsonClient.connect(p.url))
            assert (await json_client.join(moving[0], "json-user"))["containerId"] == "w-1"

            for s, c in clients.items():
                await c.insert(f"[{s}:before]")

            async def keep_editing(phase: str) -> None:
                for s, c in clients.items():
                    await c.insert(f"[{s}:{phase}]")

            async with anyio.create_task_group() as tg:
                tg.start_soon(p.admin, "POST", "/admin/workers/w-1/drain")
                await keep_editing("during")
            await keep_editing("after")

            for s, c in clients.items():
                tokens = [f"[{s}:{phase}]" for phase in ("before", "during", "after")]
                state = await c.wait(expect_contains=tokens, timeout_ms=15_000)
                assert all(t in state["text"] for t in tokens)
            # The moved sessions' clients reconnected (y-websocket did it by itself); the
            # others were never touched. (The drain runs in the background: wait for it.)
            for s in moving:
                await eventually(
                    partial(reconnected, clients[s]), 15, f"{s}'s client reconnected", 0.1
                )
            for s in staying:
                assert clients[s].reconnects == 0, s
            assert p.owner(moving[0]) != "w-1" and "w-1" not in p.router.membership.ring
            # The JSON client was sent away with 1012 and lands on the new owner on rejoin.
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await json_client.recv("never", timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            async with JsonClient.connect(p.url) as rejoined:
                joined = await rejoined.join(moving[0], "json-user")
                assert joined["containerId"] == p.owner(moving[0]) != "w-1"
                text = await rejoined.get_file("f.txt")
                assert text is not None and f"[{moving[0]}:after]" in text
        # Everything is in storage: a fresh pool on the same storage serves it all.
        async with pool(tmp_path, 2) as p2:
            for s in moving + staying:
                fresh = await run_js_client(
                    f"{p2.url}/yjs", f"{s}/f.txt", expect_contains=[f"[{s}:after]"]
                )
                assert all(f"[{s}:{ph}]" in fresh["text"] for ph in ("before", "during", "after"))
            async with JsonClient.connect(p2.url) as j:
                await j.join(moving[0], "late")
                text = await j.get_file("f.txt")
                assert text is not None and f"[{moving[0]}:during]" in text


class TestSigkill:
    async def test_clients_move_to_the_next_owner_and_flushed_edits_survive(
        self, tmp_path: Path
    ) -> None:
        names = ["w-0", "w-1", "w-2"]
        session = sessions_owned_by("w-2", names, 1, "kill")[0]
        async with pool(tmp_path, 3) as p:
            async with js_client(f"{p.url}/yjs", f"{session}/live.txt") as js:
                acked: list[tuple[float, str]] = []
                async with JsonClient.connect(p.url) as j:
                    assert (await j.join(session, "typist"))["containerId"] == "w-2"
                    content = ""
                    for i in range(15):
                        content += f"<{i}>"
                        reply = await j.file_op(type="update", path="log.txt", content=content)
                        assert reply["type"] == "fileOperationSuccess"
                        acked.append((time.monotonic(), f"<{i}>"))
                        await js.insert(f"[js{i}]")
                        await asyncio.sleep(0.03)  # pacing: edits spread over time before the kill
                    # Time passes on purpose: edits acknowledged a flush interval before the kill
                    # must be durable; waiting until they are would prove nothing.
                    await asyncio.sleep(0.3)
                    killed_at = time.monotonic()
                    p.workers["w-2"].signal(signal.SIGKILL)
                    assert await p.workers["w-2"].wait() == -signal.SIGKILL
                await p.wait_ring({"w-0", "w-1"})
                new_owner = p.owner(session)
                await js.insert("[after-kill]")
                state = await js.wait(expect_contains=["[after-kill]", "[js14]"], timeout_ms=15_000)
                assert js.reconnects >= 1
                assert all(f"[js{i}]" in state["text"] for i in range(15))
            # Edits acknowledged at least one flush interval before the kill were in storage:
            # the new owner loaded them (no client holding CRDT state replayed the JSON edits).
            async with JsonClient.connect(p.url) as j:
                joined = await j.join(session, "checker")
                assert joined["containerId"] == new_owner
                text = await j.get_file("log.txt") or ""
                durable = [tok for t, tok in acked if t < killed_at - 0.1]
                assert durable and all(tok in text for tok in durable), (text, durable)


class TestAddWorker:
    async def test_only_sessions_whose_owner_changed_are_handed_off(self, tmp_path: Path) -> None:
        sessions = [f"grow-{i}" for i in range(24)]
        async with pool(tmp_path, 2) as p, AsyncExitStack() as stack:
            clients = {}
            for s in sessions:
                c = await stack.enter_async_context(YjsClient.connect(p.url, f"{s}/a.txt"))
                await asyncio.wait_for(c.synced.wait(), 5)
                await c.insert(0, f"<{s}>")
                clients[s] = c
            expected = {
                s
                for s in sessions
                if ring.owner(s, ["w-0", "w-1"]) != ring.owner(s, ["w-0", "w-1", "w-2"])
            }
            assert 0 < len(expected) < len(sessions)
            await p.add_worker("w-2")
            await wait_until(
                lambda: all(clients[s].ws.close_code is not None for s in expected),
                10,
                "moved sessions closed",
            )
            await asyncio.sleep(0.5)  # time passes on purpose: a wrong extra hand-off would show
            closed = {s for s, c in clients.items() if c.ws.close_code is not None}
            assert closed == expected
            assert {clients[s].close_code for s in expected} == {1012}
            assert p.metric("collab_router_handoffs_total") == len(expected)
            # The old owners flushed and let go; the new owner serves the full text.
            for s in sorted(expected)[:3]:
                async with YjsClient.connect(p.url, f"{s}/a.txt") as again:
                    await again.wait_text(f"<{s}>")
                located = await p.admin("GET", f"/admin/sessions/{s}")
                assert located["owner"] == "w-2" and located["liveOn"] == ["w-2"]


class TestUnreachableOwner:
    async def test_the_client_gets_a_reason_and_its_reconnect_goes_to_the_next_owner(
        self, tmp_path: Path
    ) -> None:
        names = ["w-0", "w-1"]
        session = sessions_owned_by("w-1", names, 1, "gone")[0]
        # Health rounds far apart: only the proxy's own failed connection can notice.
        async with pool(tmp_path, 2, health_interval_ms=60_000) as p:
            p.workers["w-1"].kill()
            async with JsonClient.connect(p.url) as j:
                await j.send({"type": "join", "sessionId": session, "userId": "u"})
                error = await j.recv("error")
                assert error["error"] == "Session unavailable"
                assert "w-1" in error["reason"] and "unreachable" in error["reason"]
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await j.recv("never")
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            assert p.metric("collab_router_upstream_errors_total") == 1
            async with JsonClient.connect(p.url) as j:
                assert (await j.join(session, "u"))["containerId"] == "w-0"
            async with YjsClient.connect(p.url, f"{session}/a.txt") as y:
                await asyncio.wait_for(y.synced.wait(), 5)


class TestPartitionedWorker:
    async def test_a_frozen_worker_loses_its_sessions_and_its_clients_are_sent_on(
        self, tmp_path: Path
    ) -> None:
        """SIGSTOP: the process holds its sockets but answers nothing, like a partition. The
        router's health checks time out, the hand-off request to it times out, and the router
        closes the session's clients itself so they reconnect to the new owner."""
        names = ["w-0", "w-1"]
        session = sessions_owned_by("w-1", names, 1, "frozen")[0]
        async with pool(
            tmp_path, 2, health_interval_ms=200, health_timeout_ms=300, handoff_timeout_ms=500
        ) as p:
            async with YjsClient.connect(p.url, f"{session}/a.txt") as y:
                await asyncio.wait_for(y.synced.wait(), 5)
                await y.insert(0, "typed before the freeze")

                async def flushed_by_w1() -> bool:
                    live = await session_on(p.workers["w-1"], session)
                    return live is not None and bool(live["users"]) and not live["unflushedBytes"]

                await eventually(flushed_by_w1, 5, "the edit flushed by w-1")
                p.workers["w-1"].signal(signal.SIGSTOP)
                try:
                    await wait_until(lambda: y.ws.close_code is not None, 10, "client sent on")
                    assert y.close_code == 1012
                    assert "moved to worker w-0" in y.close_reason
                    async with YjsClient.connect(p.url, f"{session}/a.txt") as again:
                        await again.wait_text("typed before the freeze")
                finally:
                    p.workers["w-1"].signal(signal.SIGCONT)
            assert p.metric("collab_router_handoffs_total") == 1
