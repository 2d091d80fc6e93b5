"""The one adapter between Starlette WebSockets and a Client: accept, pump, close.

Each connection is one task group: this task reads, one writer drains the client's buffer. When
either side ends (peer gone, slow-client drop, drain) the other is cancelled and the socket is
closed with the code the client was given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .client import Client, Payload

Handler = Callable[[bytes | str], Awaitable[None]]
_CLOSE_GRACE_S = 1.0


async def pump(websocket: WebSocket, client: Client, handle: Handler) -> None:
    """Runs until the peer disconnects or the client is closed; then closes the socket."""
    send = websocket.send
    receive = websocket.receive

    async def transmit(data: Payload) -> None:
        if isinstance(data, bytes):
            await send({"type": "websocket.send", "bytes": data})
        else:
            await send({"type": "websocket.send", "text": data})

    async with anyio.create_task_group() as tg:

        async def writer() -> None:
            with anyio.CancelScope() as sending:
                client.abort_send = sending.cancel
                try:
                    await client.run_writer(transmit)
                except (OSError, RuntimeError, WebSocketDisconnect):
                    client.close(1006, "send failed")  # peer gone mid-send; the reader sees it too
                    tg.cancel_scope.cancel()
                    return
            # A peer that stopped reading may never take the close frame either.
            with anyio.move_on_after(_CLOSE_GRACE_S):
                await close(websocket, client.close_code, client.close_reason)
            tg.cancel_scope.cancel()

        tg.start_soon(writer)
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                break
            data = message.get("bytes")
            if data is None:
                data = message.get("text") or ""
            await handle(data)
            if client.closing:
                # The handler refused the client; let the writer send the close frame.
                await anyio.sleep_forever()
        client.close(1000, "peer closed", discard=True)
        tg.cancel_scope.cancel()


async def close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    # A close frame carries at most 123 bytes of reason; the peer may already be gone, and a
    # close that cannot be delivered is not an error.
    reason = reason.encode()[:120].decode(errors="ignore")
    with contextlib.suppress(OSError, RuntimeError, WebSocketDisconnect):
        await websocket.close(code, reason)
