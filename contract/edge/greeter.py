"""A new connection on a public port, until its head is read.

The head decides what the connection becomes: a WebSocket upgrade goes to the program (the
worker serves it, the router routes it), anything else to the plain-HTTP relay. Until then the
``Greeter`` holds the bytes, enforces the head's size limit (431, complete head or not) and its
deadline (the connection is closed), and nothing else: no task, no parsing.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from .heads import HEAD_TIMEOUT_S, HeadTooLarge, head_end, http_answer, is_websocket_upgrade


class Doorway(Protocol):
    """Where a greeted connection goes; each call takes the transport over (``set_protocol``)."""

    def websocket(self, transport: asyncio.Transport, head: bytes, rest: bytes) -> None:
        """An upgrade request: ``head`` through its blank line, ``rest`` what followed it."""

    def plain_http(self, transport: asyncio.Transport, data: bytes) -> None:
        """Anything else: ``data`` is everything read so far, head first."""


class Greeter(asyncio.Protocol):
    __slots__ = ("_buffer", "_doorway", "_timeout_s", "_timer", "_transport")

    def __init__(self, doorway: Doorway, timeout_s: float = HEAD_TIMEOUT_S) -> None:
        self._doorway = doorway
        self._timeout_s = timeout_s
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._timeout_s, self._transport.close)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        buffer = self._buffer
        buffer += data
        try:
            size = head_end(buffer)
        except HeadTooLarge as exc:
            self._stop_timer()
            buffer.clear()
            transport.write(http_answer(exc.status, str(exc)))
            transport.close()
            return
        if size is None:
            return
        self._stop_timer()
        head = bytes(buffer[:size])
        if is_websocket_upgrade(head):
            self._doorway.websocket(transport, head, bytes(buffer[size:]))
        else:
            self._doorway.plain_http(transport, bytes(buffer))
        buffer.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
