"""Refusing a WebSocket before it is served, with a reason the client can act on.

Refusals complete the handshake and then close with a code and reason (a bare handshake
failure tells a browser nothing), except the one a router can act on: a session owned by
another live worker is answered 421 with the owner, so the router connects there instead.
"""

from __future__ import annotations

import contextlib

from starlette.types import Scope, Send

from contract import close_codes as codes
from contract.routing import MISDIRECTED, OwnerHint

from ..connection import accept, close, deny, routed
from ..ownership import NotOwner


async def refuse(
    send: Send, subprotocol: str | None, code: int, reason: str, message: str | None = None
) -> None:
    """Accepts only to close with ``code``/``reason``, after one text ``message`` if given."""
    await accept(send, subprotocol)
    if message is not None:
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "websocket.send", "text": message})
    await close(send, code, reason)


async def refuse_not_owner(
    scope: Scope, send: Send, subprotocol: str | None, exc: NotOwner, message: str | None = None
) -> None:
    record = exc.record
    if routed(scope):
        hint = OwnerHint(record.worker, record.address, record.epoch)
        if await deny(scope, send, MISDIRECTED, hint.headers(), str(exc)):
            return
    await refuse(send, subprotocol, codes.TRY_AGAIN, str(exc), message)
