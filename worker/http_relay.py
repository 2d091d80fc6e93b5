"""Plain HTTP on the public port, relayed as bytes to the app's private socket.

The worker serves WebSockets itself, but every other request (health, readiness, metrics,
``/admin``, ``/peer``, ``/api``) is uvicorn's to parse: keep-alive, bodies and errors behave as
they always did. A relayed connection costs two small protocol objects and one read and one
write per chunk each way; when one side cannot take more, the other is not read.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

import structlog

from contract.relaying import RelayFlow

if TYPE_CHECKING:
    from .listener import Listener

log = structlog.get_logger("worker.http_relay")

_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 24\r\nConnection: close\r\n\r\nHTTP app not answering\r\n"
)


class Side(RelayFlow, asyncio.Protocol):
    """One socket of a relay: what it reads is written to ``partner``'s socket."""

    __slots__ = ("eof", "lost", "partner", "pending", "transport")

    def __init__(self, transport: asyncio.Transport | None = None) -> None:
        self.transport = transport
        self.partner: Side | None = None
        self.pending = bytearray()  # read before the partner was connected
        self.eof = False
        self.lost = False

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


class _ClientSide(Side):
    __slots__ = ("listener",)

    def __init__(self, transport: asyncio.Transport, listener: Listener) -> None:
        super().__init__(transport)
        self.listener = listener

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        assert self.transport is not None
        self.listener.relay_ended(self.transport)


def relay_http(listener: Listener, transport: asyncio.Transport, data: bytes) -> None:
    """Relays this connection (``data``: what was read of it so far) to the HTTP app."""
    client = _ClientSide(transport, listener)
    client.pending += data
    transport.set_protocol(client)
    transport.pause_reading()  # until the app's socket is connected
    listener.spawn(_connect(listener, client))


async def _connect(listener: Listener, client: _ClientSide) -> None:
    transport = client.transport
    assert transport is not None
    try:
        _, upstream = await listener.private.connect(Side)
    except OSError as exc:
        log.error("http_relay_failed", error=str(exc))
        if not transport.is_closing():
            transport.write(_UNAVAILABLE)
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
