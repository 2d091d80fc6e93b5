"""The relay between two real sockets: bytes pass untouched, closes land between messages."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from websockets.frames import Frame, Opcode

from router import frames
from router.relay import Relay, Side


@dataclass
class Wires:
    relay: Relay
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter]  # the client's end
    worker: tuple[asyncio.StreamReader, asyncio.StreamWriter]  # the worker's end


@asynccontextmanager
async def wired() -> AsyncIterator[Wires]:
    loop = asyncio.get_running_loop()
    client_far, client_near = socket.socketpair()
    worker_far, worker_near = socket.socketpair()
    _, client_side = await loop.connect_accepted_socket(Side, client_near)
    _, worker_side = await loop.connect_accepted_socket(Side, worker_near)
    client_end = await asyncio.open_connection(sock=client_far)
    worker_end = await asyncio.open_connection(sock=worker_far)
    relay = Relay(client_side, worker_side, "s", "w-0")
    relay.start(frames.FrameCursor())
    try:
        yield Wires(relay, client_end, worker_end)
    finally:
        for _, writer in (client_end, worker_end):
            writer.close()
        client_side.abort()
        worker_side.abort()


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Exactly one unmasked (server) frame off the stream; what follows stays in the reader."""
    head = await asyncio.wait_for(reader.readexactly(2), 5)
    assert not head[1] & 0x80, "frames towards a client are never masked"
    n = head[1] & 0x7F
    extra = {126: 2, 127: 8}.get(n, 0)
    head += await reader.readexactly(extra)
    if extra:
        n = int.from_bytes(head[2:], "big")
    payload = await asyncio.wait_for(reader.readexactly(n), 5)
    return Frame(Opcode(head[0] & 0x0F), payload, bool(head[0] & 0x80))


class TestRelay:
    async def test_bytes_pass_both_ways_unchanged(self) -> None:
        async with wired() as w:
            masked = frames.frame(frames.OP_BINARY, b"\x00\x01edit", mask=True)
            w.client[1].write(masked)
            assert await asyncio.wait_for(w.worker[0].readexactly(len(masked)), 5) == masked
            big = frames.frame(frames.OP_BINARY, bytes(range(256)) * 1000)
            w.worker[1].write(big)
            assert await asyncio.wait_for(w.client[0].readexactly(len(big)), 5) == big

    async def test_a_close_waits_for_the_message_in_flight_to_end(self) -> None:
        async with wired() as w:
            message = frames.frame(frames.OP_BINARY, b"x" * 10_000)
            w.worker[1].write(message[:5000])
            await asyncio.sleep(0.05)
            w.relay.close(1012, "session moved to worker w-1; reconnect")
            w.worker[1].write(message[5000:])
            first = await read_frame(w.client[0])
            assert first.data == b"x" * 10_000
            close = await read_frame(w.client[0])
            assert close.opcode == frames.OP_CLOSE
            assert int.from_bytes(close.data[:2], "big") == 1012
            assert close.data[2:] == b"session moved to worker w-1; reconnect"
            # The worker's connection is let go once the client has been told.
            assert await asyncio.wait_for(w.worker[0].read(), 5) == b""

    async def test_a_worker_that_vanishes_between_messages_is_a_1012(self) -> None:
        async with wired() as w:
            w.worker[1].write(frames.frame(frames.OP_BINARY, b"last"))
            await asyncio.sleep(0.05)
            w.worker[1].transport.abort()
            assert (await read_frame(w.client[0])).data == b"last"
            close = await read_frame(w.client[0])
            assert int.from_bytes(close.data[:2], "big") == 1012
            assert b"went away" in close.data

    async def test_the_clients_close_reply_ends_the_linger(self) -> None:
        async with wired() as w:
            w.relay.close(1012, "bye")
            close = await read_frame(w.client[0])
            assert close.opcode == frames.OP_CLOSE
            w.client[1].write(frames.close_frame(1012, "", mask=True))
            assert await asyncio.wait_for(w.client[0].read(), 1) == b""
