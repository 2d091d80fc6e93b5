"""Byte relay between a client socket and a worker socket (asyncio protocols, no decoding).

After the routing decision a relayed connection costs one ``data_received`` and one ``write``
per chunk in each direction; the only inspection is a frame-boundary cursor on the worker→client
stream, so that a close frame of the router's own (hand-off, dead worker) lands between two
messages. Back-pressure is end to end: when one side's socket cannot take more, the other side
stops being read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from contract import close_codes as codes
from contract.edge.flow import RelayFlow

from .frames import FrameCursor, close_frame

LINGER_S = 2.0  # after our close frame, how long to wait for the client's before hanging up
BOUNDARY_WAIT_S = 1.0  # how long a close may wait for the current worker message to end


class Side(RelayFlow, asyncio.Protocol):
    """One TCP connection: buffered while the router reads a head, then relayed to ``partner``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.partner: Side | None = None
        self.cursor: FrameCursor | None = None  # set on the worker side of a relay
        self.after_data: Callable[[], None] | None = None
        self.on_lost: Callable[[], None] | None = None
        self.discard: Callable[[bytes], None] | None = None
        self.lost = False
        self._waiter: asyncio.Future[None] | None = None

    @classmethod
    def adopt(cls, transport: asyncio.Transport, data: bytes) -> Side:
        """A client connection taken over from the greeter (``data``: what it has read)."""
        side = cls()
        side.transport = transport
        side.buffer += data
        transport.set_protocol(side)
        return side

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        partner = self.partner
        if partner is not None:
            cursor = self.cursor
            if cursor is not None:
                cursor.feed(data)
            partner.write(data)
            if self.after_data is not None:
                self.after_data()
        elif self.discard is not None:
            self.discard(data)
        else:
            self.buffer += data
            self._wake()

    def eof_received(self) -> bool | None:
        return None  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()
        if self.on_lost is not None:
            self.on_lost()

    # --- helpers ---------------------------------------------------------------------------

    def write(self, data: bytes | bytearray) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def linger(self, timeout: float = LINGER_S) -> None:
        """After our close frame: drop what the peer sends until its close frame, then hang up.

        Hanging up at once would let the kernel answer frames the peer is still sending (a
        y-websocket client sends its sync step 1 on open) with a reset, and a reset can destroy
        our close frame before the peer reads it: the peer would see 1006 instead of our code.
        ``buffer`` must hold whole frames from a frame boundary on (they are dropped too).
        """
        cursor = FrameCursor()

        def discard(data: bytes) -> None:
            cursor.feed(data)
            if cursor.closed:
                self.close()

        self.partner = None
        self.discard = discard
        pending = bytes(self.buffer)
        self.buffer.clear()
        if pending:
            discard(pending)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()  # it may have been paused by back-pressure
            asyncio.get_running_loop().call_later(timeout, self.close)

    @property
    def peer_ip(self) -> str:
        if self.transport is None:
            return ""
        peer = self.transport.get_extra_info("peername")
        return str(peer[0]) if isinstance(peer, tuple) else ""

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_data(self, timeout: float) -> None:  # noqa: ASYNC109 - a deadline per call
        """Until more bytes arrive or the connection is gone; TimeoutError after ``timeout``."""
        if self.lost:
            raise ConnectionError("connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._waiter, timeout)
        finally:
            self._waiter = None
        if self.lost and not self.buffer:
            raise ConnectionError("connection closed")


class Relay:
    """A client WebSocket relayed to the worker that owns its session."""

    def __init__(self, client: Side, upstream: Side, session: str, worker: str):
        self.client = client
        self.upstream = upstream
        self.session = session
        self.worker = worker
        self.closing = False
        self.on_end: Callable[[Relay], None] | None = None
        self._ended = False

    def start(self, cursor: FrameCursor) -> None:
        client, upstream = self.client, self.upstream
        upstream.cursor = cursor
        client.partner, upstream.partner = upstream, client
        client.on_lost = self._client_lost
        upstream.on_lost = self._upstream_lost
        # Bytes that arrived while the route was being set up go first.
        if client.buffer:
            upstream.write(client.buffer)
            client.buffer.clear()
        if client.lost:
            self._client_lost()
        elif upstream.lost:
            self._upstream_lost()

    def close(self, code: int, reason: str) -> None:
        """Sends the client away with ``code`` (1012: reconnect) between two worker messages."""
        if self.closing:
            return
        self.closing = True
        cursor = self.upstream.cursor
        if cursor is None or cursor.closed:
            # The worker is already closing this connection; its close frame is on the way.
            self.upstream.after_data = None
            return
        if cursor.at_boundary:
            self._send_close(code, reason)
            return

        def at_boundary() -> None:
            if cursor.at_boundary:
                self._send_close(code, reason)

        self.upstream.after_data = at_boundary
        loop = asyncio.get_running_loop()
        loop.call_later(BOUNDARY_WAIT_S, self._give_up_boundary)

    def _give_up_boundary(self) -> None:
        if not self._ended and self.upstream.after_data is not None:
            self.upstream.after_data = None
            self.upstream.close()
            self.client.abort()

    def _send_close(self, code: int, reason: str) -> None:
        client, upstream = self.client, self.upstream
        upstream.after_data = None
        upstream.partner = None
        upstream.on_lost = None
        client.partner = None
        upstream.close()
        client.write(close_frame(code, reason))
        client.linger()
        self._end()

    def _client_lost(self) -> None:
        self.upstream.close()
        self._end()

    def _upstream_lost(self) -> None:
        cursor = self.upstream.cursor
        if self._ended or self.client.lost:
            self._end()
            return
        if cursor is not None and not cursor.closed and cursor.at_boundary:
            # The worker died or dropped us without a close frame: tell the client to
            # reconnect (its next connection goes to the next owner).
            self.client.partner = None
            gone = f"worker {self.worker} went away; reconnect"
            self.client.write(close_frame(codes.RESTART, gone))
            self.client.linger()
        else:
            self.client.close()
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            if self.on_end is not None:
                self.on_end(self)
