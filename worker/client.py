"""A client connection as sessions and rooms see it: ``send`` never waits, ``close`` ends it.

Fan-out calls ``send`` once per recipient per message, so it must never await a socket: one
slow reader cannot delay the others. The WebSocket connection (``worker.connection``) writes
each message to its socket at once and drops a client whose unsent bytes pass its limit
(close 1008) instead of growing the worker's memory without bound.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from contract import close_codes as codes

Payload = bytes | str


class Client(ABC):
    """What every client has; ``send`` and ``close`` are its connection's (the WebSocket
    ``Connection``, or a test's buffering client)."""

    __slots__ = ("close_code", "close_reason", "closing", "user_id")

    def __init__(self, user_id: str = "anonymous") -> None:
        self.user_id = user_id
        self.closing = False
        self.close_code: int = codes.NORMAL
        self.close_reason = ""

    @abstractmethod
    def send(self, data: Payload) -> bool:
        """Sends ``data`` (bytes: a binary message, str: a text one) without waiting; False
        when the client is closing or was just dropped as too slow."""

    async def alive(self, within_s: float) -> bool:
        """Whether the peer is still there (a WebSocket answers a ping within ``within_s``);
        one that is not connected by a socket is alive until it closes."""
        return not self.closing

    @abstractmethod
    def close(self, code: int, reason: str, *, discard: bool = False) -> None:
        """Ends the connection with ``code``/``reason`` after what was sent (``discard``: the
        client is too slow, so what it has not read yet may be dropped)."""
