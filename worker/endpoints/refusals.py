"""Refusing a WebSocket before it is served, with a reason the client can act on.

Refusals complete the handshake and then close with a code and reason (a bare handshake
failure tells a browser nothing), except the one a router can act on: a session owned by
another live worker is answered 421 with the owner, so the router connects there instead.
"""

from __future__ import annotations

from http import HTTPStatus

from contract import close_codes as codes
from contract.routing import MISDIRECTED, OwnerHint

from ..connection import Connection
from ..ownership import NotOwner


def refuse(
    conn: Connection, subprotocol: str | None, code: int, reason: str, message: str | None = None
) -> None:
    """Accepts only to close with ``code``/``reason``, after one text ``message`` if given."""
    if not conn.accept(subprotocol):
        return  # the peer is gone
    if message is not None:
        conn.send(message)
    conn.close(code, reason)


def routed(conn: Connection) -> bool:
    """True when a router opened this connection (it can follow a 421 to the owner)."""
    return conn.routed_by is not None


def refuse_not_owner(
    conn: Connection, subprotocol: str | None, exc: NotOwner, message: str | None = None
) -> None:
    record = exc.record
    if routed(conn):
        hint = OwnerHint(record.worker, record.address, record.epoch)
        headers = [(name.decode(), value.decode()) for name, value in hint.headers()]
        conn.deny(MISDIRECTED, headers, str(exc))
        return
    refuse(conn, subprotocol, codes.TRY_AGAIN, str(exc), message)


def deny_unknown_path(conn: Connection) -> None:
    """No WebSocket endpoint there: 403, as the ASGI server answered a close before accept."""
    conn.deny(HTTPStatus.FORBIDDEN, [], "")
