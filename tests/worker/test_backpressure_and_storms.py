"""Slow clients are dropped instead of growing memory; join storms all sync."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.support import (
    JsonClient,
    YjsClient,
    eventually,
    run_worker,
    settings_for,
    wait_until,
)
from worker.settings import StorageSettings
from worker.storage import LocalStore, SessionStore


class TestSlowClients:
    async def test_a_client_that_stops_reading_is_disconnected_and_others_keep_up(
        self, tmp_path: Path
    ) -> None:
        limit = 512 * 1024
        settings = settings_for(
            StorageSettings(storage_dir=tmp_path / "s"), send_buffer_bytes=limit
        )
        async with run_worker(settings) as worker:
            # A peer with a tiny kernel receive buffer that never reads: the server's writes
            # back up into this client's send buffer.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", worker.settings.port))
            stalled = await websockets.connect(
                f"{worker.url}/yjs/s-slow/a.txt", sock=sock, max_queue=1
            )
            try:
                async with (
                    YjsClient.connect(worker.url, "s-slow/a.txt") as writer,
                    YjsClient.connect(worker.url, "s-slow/a.txt") as reader,
                ):
                    await asyncio.gather(writer.synced.wait(), reader.synced.wait())
                    # 12 MB in all: more than the kernel's socket buffers (up to 4 MB on the
                    # sending side here) plus the stalled client's 512 KB allowance.
                    chunk = "x" * 200_000
                    for i in range(60):
                        await writer.insert(0, f"{i:03d}{chunk}")
                    await reader.wait_for(lambda: len(str(reader.text)) == 60 * 200_003, timeout=30)
                    dropped = worker.app.state.metrics.slow_clients_dropped
                    await wait_until(lambda: dropped._value.get() == 1, what="slow client dropped")
                    room = worker.manager.sessions["s-slow"].rooms["a.txt"]
                    await wait_until(lambda: len(room.clients) == 2, what="stalled client gone")
                    # Nothing buffered anywhere beyond the allowance.
                    assert all(c.transport.get_write_buffer_size() <= limit for c in room.clients)
            finally:
                stalled.transport.abort() if hasattr(stalled, "transport") else None
                sock.close()


async def _seed(storage: Path, sessions: list[str]) -> None:
    from pycrdt import Doc, Map, Text

    store = SessionStore(LocalStore(storage), "seeder")
    for sid in sessions:
        doc, index = Doc(), Doc()
        doc.get("content", type=Text).insert(0, f"seeded {sid}")
        index.get("files", type=Map)["a.txt"] = {"type": "text"}
        await store.append_updates(sid, [("a.txt", doc.get_update()), ("", index.get_update())])


@pytest.mark.slow
class TestJoinStorms:
    async def test_100_clients_joining_20_fresh_sessions_at_once_all_sync(
        self, tmp_path: Path
    ) -> None:
        storage = tmp_path / "s"
        sessions = [f"storm-{i}" for i in range(20)]
        await _seed(storage, sessions)
        async with run_worker(settings_for(StorageSettings(storage_dir=storage))) as worker:
            ok = await _storm(worker.url, sessions, per_session=5)
            assert ok == 100
            assert len(worker.manager.sessions) == 20

    async def test_clients_of_a_just_drained_worker_all_sync_on_the_next(
        self, tmp_path: Path
    ) -> None:
        storage = StorageSettings(storage_dir=tmp_path / "s")
        sessions = [f"moved-{i}" for i in range(20)]
        async with (
            run_worker(settings_for(storage, worker_id="w-a", admin_token="t")) as a,
            run_worker(settings_for(storage, worker_id="w-b")) as b,
        ):
            clients = []
            async with asyncio.TaskGroup() as tg:
                for sid in sessions:
                    for n in range(5):
                        clients.append(tg.create_task(_open_and_type(a.url, sid, f"[{sid}:{n}]")))
            handles = [t.result() for t in clients]
            async with httpx.AsyncClient() as http:
                auth = {"Authorization": "Bearer t"}
                r = await http.post(f"{a.http}/admin/drain", headers=auth, timeout=30)
                assert r.status_code == 202  # drains in the background; progress in status

                async def drained() -> dict[str, Any] | None:
                    status = await http.get(f"{a.http}/admin/status", headers=auth)
                    drain: dict[str, Any] = status.json()["drain"]
                    return None if drain["inProgress"] else drain

                drain = await eventually(drained, 30, "the drain finished", interval=0.1)
                assert drain["sessionsLeft"] == [] and drain["last"]["notDurable"] == []
                assert drain["last"]["handedOff"] == 20
            for y, cm in handles:
                await wait_until(lambda y=y: y.close_code is not None, what="1012")
                assert y.close_code == 1012
                await cm.__aexit__(None, None, None)
            # Everyone reconnects at the same moment to the new owner.
            ok = await _storm(
                b.url,
                sessions,
                per_session=5,
                expect=lambda sid: [f"[{sid}:{n}]" for n in range(5)],
            )
            assert ok == 100


async def _open_and_type(url: str, sid: str, token: str) -> tuple[YjsClient, object]:
    cm = YjsClient.connect(url, f"{sid}/a.txt")
    y = await cm.__aenter__()
    await asyncio.wait_for(y.synced.wait(), 20)
    await y.insert(0, token)
    return y, cm


async def _storm(
    url: str,
    sessions: list[str],
    per_session: int,
    expect: Callable[[str], list[str]] | None = None,
) -> int:
    start = asyncio.Event()
    waiting = 0

    async def one(sid: str, n: int) -> bool:
        nonlocal waiting
        waiting += 1
        await start.wait()
        if n % 2:
            async with JsonClient.connect(url) as j:
                await j.join(sid, f"u{n}")
                text = await j.get_file("a.txt") or ""
        else:
            async with YjsClient.connect(url, f"{sid}/a.txt") as y:
                await asyncio.wait_for(y.synced.wait(), 30)
                text = str(y.text)
        wanted = expect(sid) if expect else [f"seeded {sid}"]
        return all(w in text for w in wanted)

    tasks = [asyncio.create_task(one(sid, n)) for sid in sessions for n in range(per_session)]
    await wait_until(lambda: waiting == len(tasks), 5, "every client at the start line")
    start.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    failures = [r for r in results if r is not True]
    assert not failures, failures[:5]
    return len(results)


@pytest.mark.slow
async def test_a_worker_that_just_took_a_join_storm_stops_promptly_on_sigterm(
    tmp_path: Path,
) -> None:
    """The measured pycrdt-websocket failure: after a storm its server hung on SIGTERM."""
    import signal
    import time

    from tests.support import WorkerProcess

    storage = tmp_path / "s"
    sessions = [f"storm-{i}" for i in range(20)]
    await _seed(storage, sessions)
    proc = WorkerProcess(
        {"STORAGE_DIR": str(storage), "WORKER_ID": "w-storm"}, log=tmp_path / "worker.log"
    )
    await proc.start()
    try:
        clients = [
            YjsClient.connect(proc.url, f"{sid}/a.txt") for sid in sessions for _ in range(5)
        ]
        entered = await asyncio.gather(*(cm.__aenter__() for cm in clients))
        await asyncio.wait_for(asyncio.gather(*(y.synced.wait() for y in entered)), 30)
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert await proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 10
        await wait_until(lambda: all(y.close_code == 1012 for y in entered), what="1012 for all")
        for cm in clients:
            await cm.__aexit__(None, None, None)
    finally:
        proc.kill()
