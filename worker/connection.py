"""The one adapter between raw ASGI WebSockets and a Client: accept, pump, close.

WebSockets bypass Starlette on purpose: its per-connection wrapper and per-message exception
plumbing cost about 6 KB per idle connection and CPU on every message (docs/benchmarks.md).
Each connection is this task (the reader) plus one writer task draining the client's buffer;
when either side ends (peer gone, slow-client drop, drain) the other is stopped and the socket is
closed with the code the client was given.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from starlette.types import Receive, Scope, Send

from contract import close_codes as codes
from contract.routing import ROUTER_HEADER

from .client import Client, Payload

Handler = Callable[[bytes | str], Awaitable[None]]
_CLOSE_GRACE_S = 1.0


async def connected(receive: Receive) -> bool:
    """Reads the handshake request (``websocket.connect``); False if the peer went away first.

    Between this and ``accept`` the endpoint decides whether to take the connection at all:
    a session owned by another worker is answered with ``deny`` instead.
    """
    message = await receive()
    return bool(message["type"] == "websocket.connect")


async def accept(send: Send, subprotocol: str | None = None) -> None:
    """Completes the handshake (selecting ``subprotocol``)."""
    await send({"type": "websocket.accept", "subprotocol": subprotocol})


def routed(scope: Scope) -> bool:
    """True when a router opened this connection (it can follow a ``deny`` to the owner)."""
    key = ROUTER_HEADER.encode()
    return any(name == key for name, _ in scope.get("headers", ()))


def header(scope: Scope, name: str) -> str | None:
    key = name.encode()
    for found, value in scope.get("headers", ()):
        if found == key:
            return bytes(value).decode("latin-1")
    return None


async def deny(
    scope: Scope, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: str
) -> bool:
    """Answers the handshake with an HTTP response instead of accepting it; False when the
    server offers no denial responses (the caller then accepts and closes)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        return False
    data = body.encode()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": data, "more_body": False})
    return True


async def close(send: Send, code: int, reason: str) -> None:
    # The peer may already be gone, and a close that cannot be delivered is not an error.
    reason = codes.fit_reason(reason)
    with contextlib.suppress(OSError, RuntimeError):
        await send({"type": "websocket.close", "code": code, "reason": reason})


async def pump(receive: Receive, send: Send, client: Client, handle: Handler) -> None:
    """Runs until the peer disconnects or the client is closed; then closes the socket."""

    async def transmit(data: Payload) -> None:
        if isinstance(data, bytes):
            await send({"type": "websocket.send", "bytes": data})
        else:
            await send({"type": "websocket.send", "text": data})

    reader = asyncio.current_task()
    assert reader is not None
    reader_done = False

    async def write() -> None:
        try:
            await client.run_writer(transmit)
        except asyncio.CancelledError:
            if reader_done:
                raise  # the peer is gone; nothing left to say
            # else: a discarding close interrupted a send stuck on a peer that stopped reading
        except (OSError, RuntimeError):
            # The peer is gone mid-send; the reader sees it too.
            client.close(codes.ABNORMAL, "send failed")
            return
        # A peer that stopped reading may never take the close frame either.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                close(send, client.close_code, client.close_reason), _CLOSE_GRACE_S
            )
        if not reader_done:
            reader.cancel()

    writer = asyncio.create_task(write())

    def abort() -> None:
        writer.cancel()

    client.abort_send = abort
    try:
        while not client.closing:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                data = message.get("text") or ""
            await handle(data)
        # The handler refused the client: the writer sends the close frame, then we are done.
        await asyncio.shield(writer)
    except asyncio.CancelledError:
        if not writer.done():
            raise
        reader.uncancel()  # the writer closed the socket and stopped us: a normal end
    finally:
        reader_done = True
        client.abort_send = None
        if not writer.done():
            client.close(codes.NORMAL, "peer closed", discard=True)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
