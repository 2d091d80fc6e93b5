"""One client connection's outbound side: a bounded send buffer drained by one writer.

Fan-out never awaits a socket: ``send`` appends to this client's buffer and returns, so one
slow reader cannot delay the others. A client whose buffer passes its byte limit is
disconnected (close 1008) instead of growing the worker's memory without bound.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable

from contract import close_codes as codes

Payload = bytes | str
_ids = itertools.count(1)


class Client:
    """Owned by its endpoint; sessions and rooms only call ``send`` and ``close``."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_closing",
        "_wake",
        "abort_send",
        "close_code",
        "close_reason",
        "id",
        "limit",
        "on_overflow",
        "user_id",
    )

    def __init__(
        self,
        limit: int,
        user_id: str = "anonymous",
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self.id = next(_ids)
        self.user_id = user_id
        self.limit = limit
        self.on_overflow = on_overflow
        self._buffer: deque[Payload] = deque()
        self._buffered = 0
        self._wake = asyncio.Event()
        self._closing = False
        self.close_code: int = codes.NORMAL
        self.close_reason = ""
        # Set by the connection: interrupts a send stuck on a peer that stopped reading.
        self.abort_send: Callable[[], None] | None = None

    @property
    def closing(self) -> bool:
        return self._closing

    def send(self, data: Payload) -> bool:
        """Queues ``data``; False when the client is closing or was just dropped as too slow."""
        if self._closing:
            return False
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > self.limit:
            if self.on_overflow is not None:
                self.on_overflow()
            self.close(
                codes.POLICY, "send buffer overflow: client too slow to keep up", discard=True
            )
            return False
        self._wake.set()
        return True

    def close(self, code: int, reason: str, *, discard: bool = False) -> None:
        """Asks the writer to send what is buffered (or ``discard`` it), then close."""
        if self._closing:
            return
        self._closing = True
        self.close_code = code
        self.close_reason = reason
        if discard:
            self._buffer.clear()
            self._buffered = 0
            if self.abort_send is not None:
                self.abort_send()
        self._wake.set()

    async def run_writer(self, transmit: Callable[[Payload], Awaitable[None]]) -> None:
        """Sends buffered messages in order until the client closes."""
        buffer = self._buffer
        while True:
            await self._wake.wait()
            self._wake.clear()
            while buffer:
                data = buffer.popleft()
                self._buffered -= len(data)
                await transmit(data)
            if self._closing:
                return
