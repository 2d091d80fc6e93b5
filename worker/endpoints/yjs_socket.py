"""The y-websocket endpoint: ``/yjs/{sessionId}/{path}`` (a file) and ``/yjs/{sessionId}`` (index).

Any unmodified y-websocket provider works: the server opens with sync step 1 and the room's
awareness, answers step 1 with step 2, and applies step 2 and updates from the client.
With ``AUTH_SECRET`` set, a connection whose token does not allow the session is closed (4401 or
4403, see ``contract.auth``) before the session is loaded. The session is claimed before the
handshake completes: when another live worker owns it, a router is answered 421 with the owner
(``contract.routing``) and a direct client gets close 1013 naming it.

Every message is handled synchronously, in the order it arrived (``worker.connection``): an
update is applied, queued for the room's fan-out and buffered for the group commit at once. An
update refused by a limit (``worker.limits``) closes the connection with 4413 and the limit in
the reason; y-websocket does not reconnect after it, so it does not send that update again.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import structlog

from contract import close_codes as codes
from contract.auth import AuthRefused
from contract.ids import validate_session_id
from contract.paths import PathRefused, check_path

from .. import yjs_protocol as yjs
from ..client import Client, Payload
from ..connection import Connection
from ..doc_schema import EMPTY_UPDATE, INDEX_DOC
from ..limits import LimitExceeded
from ..manager import SessionUnavailable
from ..ownership import NotOwner
from ..room import Room
from ..session import Session, SessionMoving, UpdateRejected
from . import conflicts
from .refusals import refuse, refuse_not_owner
from .worker_state import WorkerState

log = structlog.get_logger("worker.yjs")


async def open_yjs(state: WorkerState, conn: Connection, target: str) -> None:
    """``target`` is the URL path after ``/yjs/``: ``SESSION`` or ``SESSION/path/of/file``."""
    offered = conn.subprotocols
    subprotocol = state.auth.subprotocol(offered)
    raw_sid, _, raw_path = target.partition("/")
    try:
        session_id = validate_session_id(raw_sid)
        doc_name = INDEX_DOC if not raw_path else check_path(raw_path)
    except (ValueError, PathRefused) as exc:
        state.metrics.protocol_errors.labels("bad_target").inc()
        refuse(conn, subprotocol, codes.POLICY, f"invalid target: {exc}")
        return
    try:
        grant = state.auth.authenticate(conn.query, offered)
        if grant is not None:
            grant.check_session(session_id)
    except AuthRefused as refused:
        state.metrics.protocol_errors.labels(refused.label).inc()
        refuse(conn, subprotocol, refused.code, refused.reason)
        return
    try:
        session = await state.manager.acquire(session_id)
    except NotOwner as exc:
        refuse_not_owner(conn, subprotocol, exc)
        return
    except SessionUnavailable as exc:
        code = codes.RESTART if exc.draining else codes.TRY_AGAIN
        refuse(conn, subprotocol, code, exc.reason)
        return
    try:
        if conn.closing:
            return  # the peer left while the session was being claimed or loaded
        # The server's opening messages go out with the 101, in one write: its sync step 1
        # and who is in the room. Nothing runs between here and ``attach`` (no await), so
        # no update of the room can fall between what they say and the first fan-out.
        room = session.rooms.get(doc_name)
        snapshot = room.awareness_snapshot() if room is not None else None
        opening = [session.sync_start(doc_name)]
        if snapshot is not None:
            opening.append(snapshot)
        if not conn.accept(subprotocol, opening):
            return
        # With authentication, edits are logged and committed under the token's user.
        conn.user_id = grant.user if grant is not None else "anonymous"
        session.attach(conn, doc_name)
    finally:
        session.unreserve()
    # A read-only token: the client gets every change and may show its presence, but what it
    # sends is not applied (y-websocket would reconnect forever after a close, so its updates
    # are dropped instead and counted; the editor is expected to be read-only, as ours is).
    editor = _Editor(state, conn, session, doc_name, grant is None or grant.can_write(session_id))
    state.metrics.connections_active.labels("yjs").inc()
    conn.serve(editor.handle, editor.end)


class _Editor:
    """One y-websocket client of one document."""

    __slots__ = ("conn", "doc_name", "room", "session", "state", "writable")

    def __init__(
        self, state: WorkerState, conn: Connection, session: Session, doc_name: str, writable: bool
    ) -> None:
        self.state = state
        self.conn = conn
        self.session = session
        self.doc_name = doc_name
        self.room: Room = session.room(doc_name)
        self.writable = writable

    def handle(self, data: Payload) -> Coroutine[Any, Any, None] | None:
        """One message; an edit whose client ID another live connection writes as is
        returned as a step (the owner is probed first; later messages wait for it)."""
        conn, session, doc_name = self.conn, self.session, self.doc_name
        if isinstance(data, str):
            self.state.metrics.protocol_errors.labels("text_frame").inc()
            conn.close(codes.UNSUPPORTED_DATA, "y-websocket messages are binary frames")
            return None
        try:
            frame = yjs.parse(data)
            if frame.kind == yjs.MSG_SYNC:
                if frame.step == yjs.SYNC_STEP1:
                    conn.send(session.sync_reply(doc_name, frame.payload))
                elif not self.writable:
                    if frame.payload != EMPTY_UPDATE:
                        self.state.metrics.protocol_errors.labels("read_only").inc()
                elif frame.step == yjs.SYNC_UPDATE:
                    update = frame.payload
                    author = yjs.update_author(update)
                    if author is not None and (
                        owner := session.authors.claim(
                            doc_name, author, conn, lambda: session.brings_news(doc_name, update)
                        )
                    ):
                        return self._contested(author, owner, update, data)
                    session.apply_client_update(doc_name, frame.payload, conn, data)
                elif (blocked := session.authors.blocked(doc_name, frame.payload, conn)) is None:
                    session.apply_client_update(doc_name, frame.payload, conn)  # a catch-up
                else:
                    conflicts.refuse(self.state, session, doc_name, blocked, conn)
            elif frame.kind == yjs.MSG_AWARENESS:
                self.room.awareness(conn, frame.payload, data)
            elif frame.kind == yjs.MSG_QUERY_AWARENESS:
                snapshot = self.room.awareness_snapshot()
                if snapshot is not None:
                    conn.send(snapshot)
        except (yjs.FrameError, UpdateRejected) as exc:
            self._rejected(exc)
        except LimitExceeded as exc:
            conn.close(codes.TOO_LARGE, exc.refusal.reason)
        except SessionMoving as exc:
            conn.close(codes.RESTART, str(exc))
        return None

    async def _contested(self, author: int, owner: Client, update: bytes, frame: bytes) -> None:
        if not await conflicts.settle(
            self.state, self.session, self.doc_name, author, owner, self.conn
        ):
            return
        try:
            self.session.apply_client_update(self.doc_name, update, self.conn, frame)
        except UpdateRejected as exc:
            self._rejected(exc)
        except LimitExceeded as exc:
            self.conn.close(codes.TOO_LARGE, exc.refusal.reason)
        except SessionMoving as exc:
            self.conn.close(codes.RESTART, str(exc))

    def _rejected(self, exc: Exception) -> None:
        self.state.metrics.protocol_errors.labels("corrupt_update").inc()
        log.warning(
            "yjs_message_rejected", session=self.session.id, doc=self.doc_name, error=str(exc)
        )
        self.conn.close(codes.INVALID_DATA, f"rejected message: {exc}")

    def end(self) -> None:
        self.state.metrics.connections_active.labels("yjs").dec()
        self.session.detach(self.conn, self.doc_name)
