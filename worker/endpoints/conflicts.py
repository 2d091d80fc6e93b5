"""Refusing a connection that writes a document with a Yjs client ID another live connection
writes it with (``worker.authors``), on either protocol.

The owner is probed before anyone is refused: a connection that does not answer a ping within
``PROBE_S`` is a dead one (its client reconnected before the server noticed), and it gives the
ID up; one that answers keeps it, and the newcomer is closed with 4409 and a reason that says
what to do. Nothing the newcomer sent as that ID is applied.
"""

from __future__ import annotations

import structlog

from contract import close_codes as codes

from ..client import Client
from ..session import Session
from .worker_state import WorkerState

log = structlog.get_logger("worker.conflicts")

PROBE_S = 2.0  # how long an ID's owner has to answer the ping that proves it is still there


def conflict_reason(client_id: int) -> str:
    return (
        f"Yjs client id {client_id} is already writing this document on another connection;"
        " start with a fresh document (a new Y.Doc)"
    )


async def settle(
    state: WorkerState,
    session: Session,
    doc: str,
    client_id: int,
    owner: Client,
    conn: Client,
    message: str | None = None,
) -> bool:
    """True when ``conn`` may write as ``client_id`` (the owner was gone and has been
    replaced); False when it was refused (``message`` first, then closed)."""
    if await owner.alive(PROBE_S):
        refuse(state, session, doc, client_id, conn, quarantine_for=owner, message=message)
        return False
    log.info("client_id_reclaimed", session=session.id, doc=doc, client_id=client_id)
    owner.close(codes.RESTART, "a newer connection of this client took over; reconnect")
    session.authors.replace(doc, client_id, conn)
    return True


def refuse(
    state: WorkerState,
    session: Session,
    doc: str,
    client_id: int,
    conn: Client,
    *,
    quarantine_for: Client | None = None,
    message: str | None = None,
) -> None:
    """Closes ``conn`` with 4409 (after ``message``, when given); with ``quarantine_for``
    (the ID's live owner), catch-ups carrying the ID's items from other connections are
    refused from now on too."""
    state.metrics.client_id_conflicts.inc()
    if quarantine_for is not None:
        session.authors.quarantine(doc, client_id, quarantine_for)
    log.warning(
        "client_id_conflict",
        session=session.id,
        doc=doc,
        client_id=client_id,
        user=conn.user_id,
    )
    if message is not None:
        conn.send(message)
    conn.close(codes.CLIENT_ID_CONFLICT, conflict_reason(client_id))
