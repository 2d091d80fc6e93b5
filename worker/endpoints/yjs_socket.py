"""The y-websocket endpoint: ``/yjs/{sessionId}/{path}`` (a file) and ``/yjs/{sessionId}`` (index).

Any unmodified y-websocket provider works: the server opens with sync step 1 and the room's
awareness, answers step 1 with step 2, and applies step 2 and updates from the client.
With ``AUTH_SECRET`` set, a connection whose token does not allow the session is closed (4401 or
4403, see ``contract.auth``) before the session is loaded. The session is claimed before the
handshake completes: when another live worker owns it, a router is answered 421 with the owner
(``contract.routing``) and a direct client gets close 1013 naming it.
"""

from __future__ import annotations

import structlog
from starlette.types import Receive, Scope, Send

from contract import close_codes as codes
from contract.auth import AuthRefused
from contract.ids import validate_session_id
from contract.paths import PathRefused, check_path

from .. import yjs_protocol as yjs
from ..client import Client
from ..connection import accept, connected, pump
from ..manager import SessionUnavailable
from ..ownership import NotOwner
from ..session import EMPTY_UPDATE, INDEX_DOC, SessionMoving, UpdateRejected
from .refusals import refuse, refuse_not_owner
from .worker_state import WorkerState

log = structlog.get_logger("worker.yjs")


async def yjs_endpoint(
    state: WorkerState, scope: Scope, target: str, receive: Receive, send: Send
) -> None:
    """``target`` is the URL path after ``/yjs/``: ``SESSION`` or ``SESSION/path/of/file``."""
    offered = scope.get("subprotocols") or []
    subprotocol = state.auth.subprotocol(offered)
    if not await connected(receive):
        return
    raw_sid, _, raw_path = target.partition("/")
    try:
        session_id = validate_session_id(raw_sid)
        doc_name = INDEX_DOC if not raw_path else check_path(raw_path)
    except (ValueError, PathRefused) as exc:
        state.metrics.protocol_errors.labels("bad_target").inc()
        await refuse(send, subprotocol, codes.POLICY, f"invalid target: {exc}")
        return
    try:
        grant = state.auth.authenticate(scope.get("query_string", b""), offered)
        if grant is not None:
            grant.check_session(session_id)
    except AuthRefused as refused:
        state.metrics.protocol_errors.labels(refused.label).inc()
        await refuse(send, subprotocol, refused.code, refused.reason)
        return
    try:
        session = await state.manager.acquire(session_id)
    except NotOwner as exc:
        await refuse_not_owner(scope, send, subprotocol, exc)
        return
    except SessionUnavailable as exc:
        code = codes.RESTART if exc.draining else codes.TRY_AGAIN
        await refuse(send, subprotocol, code, exc.reason)
        return

    client = Client(
        state.settings.send_buffer_bytes,
        # With authentication, edits are logged and committed under the token's user.
        user_id=grant.user if grant is not None else "anonymous",
        on_overflow=state.metrics.slow_clients_dropped.inc,
    )
    try:
        await accept(send, subprotocol)
        session.attach(client, doc_name)
    finally:
        session.unreserve()
    room = session.room(doc_name)
    gauge = state.metrics.connections_active.labels("yjs")
    gauge.inc()
    # A read-only token: the client gets every change and may show its presence, but what it
    # sends is not applied (y-websocket would reconnect forever after a close, so its updates
    # are dropped instead and counted; the editor is expected to be read-only, as ours is).
    writable = grant is None or grant.can_write(session_id)

    async def handle(data: bytes | str) -> None:
        if isinstance(data, str):
            state.metrics.protocol_errors.labels("text_frame").inc()
            client.close(codes.UNSUPPORTED_DATA, "y-websocket messages are binary frames")
            return
        try:
            frame = yjs.parse(data)
            if frame.kind == yjs.MSG_SYNC:
                if frame.step == yjs.SYNC_STEP1:
                    client.send(session.sync_reply(doc_name, frame.payload))
                elif not writable:
                    if frame.payload != EMPTY_UPDATE:
                        state.metrics.protocol_errors.labels("read_only").inc()
                else:
                    relay = data if frame.step == yjs.SYNC_UPDATE else None
                    session.apply_client_update(doc_name, frame.payload, client, relay)
            elif frame.kind == yjs.MSG_AWARENESS:
                room.awareness(client, frame.payload, data)
            elif frame.kind == yjs.MSG_QUERY_AWARENESS:
                snapshot = room.awareness_snapshot()
                if snapshot is not None:
                    client.send(snapshot)
        except (yjs.FrameError, UpdateRejected) as exc:
            state.metrics.protocol_errors.labels("corrupt_update").inc()
            log.warning("yjs_message_rejected", session=session_id, doc=doc_name, error=str(exc))
            client.close(codes.INVALID_DATA, f"rejected message: {exc}")
        except SessionMoving as exc:
            client.close(codes.RESTART, str(exc))

    try:
        client.send(session.sync_start(doc_name))
        snapshot = room.awareness_snapshot()
        if snapshot is not None:
            client.send(snapshot)
        await pump(receive, send, client, handle)
    finally:
        gauge.dec()
        session.detach(client, doc_name)
