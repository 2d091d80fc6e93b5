"""Plain HTTP on a public port, relayed as bytes to the program's private HTTP socket.

WebSockets are the program's own; every other request (health, readiness, metrics, ``/admin``,
``/peer``, ``/api``, the web workspace) is uvicorn's to parse: keep-alive, bodies and errors
behave as uvicorn makes them. A relayed connection costs two small protocol objects and one
read and one write per chunk each way; when one side cannot take more, the other is not read
(``flow``). When the private socket cannot be reached, the client is answered 503 and the
failure logged as one line: the same on the router and the worker.
"""

from __future__ import annotations

import asyncio
from typing import cast

import structlog

from .flow import RelayFlow
from .heads import http_answer
from .private_socket import PrivateSocket

log = structlog.get_logger("contract.edge")

UNAVAILABLE = 503


class Side(RelayFlow, asyncio.Protocol):
    """One socket of a relay: what it reads is written to ``partner``'s socket."""

    __slots__ = ("eof", "lost", "on_lost", "partner", "pending", "transport")

    def __init__(self, transport: asyncio.Transport | None = None) -> None:
        self.transport = transport
        self.partner: Side | None = None
        self.pending = bytearray()  # read before the partner was connected
        self.eof = False
        self.lost = False
        self.on_lost: HttpRelay | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        partner = self.partner
        if partner is None or partner.transport is None:
            self.pending += data
        else:
            partner.transport.write(data)

    def eof_received(self) -> bool | None:
        partner = self.partner
        if partner is None or partner.transport is None:
            self.eof = True
            return True
        if partner.transport.can_write_eof():
            partner.transport.write_eof()
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        partner = self.partner
        if partner is not None and partner.transport is not None:
            if not partner.transport.is_closing():
                partner.transport.close()  # after what it still has to write
        if self.on_lost is not None and self.transport is not None:
            self.on_lost.ended(self.transport)


class HttpRelay:
    """The relays of one public port; ``abort`` cuts whatever is left when the program stops."""

    def __init__(self, private: PrivateSocket) -> None:
        self.private = private
        self._clients: set[asyncio.Transport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def relay(self, transport: asyncio.Transport, data: bytes) -> None:
        """Relays this connection (``data``: what was read of it so far) to the HTTP app."""
        client = Side(transport)
        client.pending += data
        client.on_lost = self
        transport.set_protocol(client)
        transport.pause_reading()  # until the app's socket is connected
        self._clients.add(transport)
        task = asyncio.get_running_loop().create_task(self._connect(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def ended(self, transport: asyncio.Transport) -> None:
        self._clients.discard(transport)

    async def _connect(self, client: Side) -> None:
        transport = client.transport
        assert transport is not None
        try:
            _, upstream = await self.private.connect(Side)
        except OSError as exc:
            log.error("http_relay_failed", error=str(exc) or type(exc).__name__)
            if not transport.is_closing():
                transport.write(http_answer(UNAVAILABLE, "HTTP app not answering; retry"))
                transport.close()
            return
        assert upstream.transport is not None
        if client.lost:
            upstream.transport.close()
            return
        client.partner, upstream.partner = upstream, client
        upstream.transport.write(client.pending)
        client.pending = bytearray()
        if client.eof:
            upstream.transport.write_eof()
        else:
            transport.resume_reading()

    def abort(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for transport in list(self._clients):
            transport.abort()
