"""What a y-websocket client gets when it joins: the 101, the server's sync step 1 and who is
in the room, in that order and in one write."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, cast

import websockets

from tests.support import RunningWorker, YjsClient, wait_until
from worker import yjs_protocol as yjs
from worker.connection import Connection

_UPGRADE = (
    b"GET /yjs/s-1/a.txt HTTP/1.1\r\nHost: w\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class _Transport:
    """Records each write: the one thing a socket cannot show (the peer sees a byte stream)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0


class _Owner:
    def spawn(self, job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(job)

    def opened(self, conn: Connection) -> None: ...

    def closed(self, conn: Connection) -> None: ...


class TestOpening:
    async def test_the_101_and_the_opening_messages_go_out_in_one_write(self) -> None:
        """One system call per join instead of one per message (on loopback the kernel
        delivers to the peer inside each write)."""
        transport = _Transport()
        conn = Connection(
            _Owner(), cast(asyncio.Transport, transport), limit=1 << 20, max_message_bytes=1 << 20
        )
        assert conn.start(_UPGRADE, b"") is not None
        step1 = yjs.sync_step1(b"\x00")
        awareness = yjs.awareness_message(yjs.encode_awareness([]))
        assert conn.accept(None, [step1, awareness])
        assert len(transport.writes) == 1
        head, _, frames = transport.writes[0].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        # Unmasked binary frames, short lengths: 0x82, the length, the message.
        assert (
            frames == bytes([0x82, len(step1)]) + step1 + bytes([0x82, len(awareness)]) + awareness
        )

    async def test_a_newcomer_gets_sync_step_1_then_who_is_in_the_room(
        self, worker: RunningWorker
    ) -> None:
        async with (
            YjsClient.connect(worker.url, "s-open/x.txt") as present,
            YjsClient.connect(worker.url, "s-open/x.txt") as watcher,
        ):
            await asyncio.wait_for(present.synced.wait(), 5)
            await asyncio.wait_for(watcher.synced.wait(), 5)
            seen = watcher.received
            payload = yjs.encode_awareness([yjs.AwarenessEntry(4242, 1, '{"user":"bob"}')])
            await present.ws.send(yjs.awareness_message(payload))
            await wait_until(lambda: watcher.received > seen, what="awareness relayed")
            async with websockets.connect(f"{worker.url}/yjs/s-open/x.txt") as ws:
                first = yjs.parse(await asyncio.wait_for(ws.recv(), 5))
                second = yjs.parse(await asyncio.wait_for(ws.recv(), 5))
        assert (first.kind, first.step) == (yjs.MSG_SYNC, yjs.SYNC_STEP1)
        assert second.kind == yjs.MSG_AWARENESS
        assert [e.client_id for e in yjs.parse_awareness(second.payload)] == [4242]
