"""The seed's JSON protocol at ``/`` and ``/ws``: one session per connection.

Every failure answers ``{"type": "error", "error": <the seed's text>}`` (plus a ``reason`` where
the seed's text is generic) and leaves the connection and the session as they were; a write
refused by a limit too (``worker.limits``: the reason names the limit and its value). Refusals by
authentication (``contract.auth``) are the exception: their error is followed by close 4401 (at
connect) or 4403 (at the join, before the session is loaded).

**Acknowledged means stored.** ``fileOperationSuccess`` is sent once the operation's edit is in
storage (group-committed with whatever else is pending; ``ACK_MODE=applied`` answers at once).
Replies keep the order of the requests: an answer to a later message waits behind an earlier
acknowledgement, so a client that pairs replies with requests by order is never misled. The
edit itself reaches the other clients at once.

A router that routes a JSON connection names its session in ``X-Collab-Session`` (it read the
join): the session is claimed before the handshake completes, so a session owned by another
live worker is answered 421 with its owner and the router connects there instead.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

import structlog

from contract import close_codes as codes
from contract import json_protocol as jmsg
from contract.auth import AuthRefused, Grant
from contract.ids import validate_session_id
from contract.paths import PathRefused, check_path
from contract.routing import SESSION_HEADER

from .. import files
from .. import yjs_protocol as yjs
from ..client import Client, Payload
from ..connection import Connection
from ..limits import LimitExceeded
from ..manager import SessionUnavailable
from ..ownership import NotOwner
from ..session import Session, SessionMoving, UpdateRejected
from . import conflicts
from .refusals import refuse, refuse_not_owner
from .worker_state import WorkerState

log = structlog.get_logger("worker.json")


async def open_json(state: WorkerState, conn: Connection) -> None:
    offered = conn.subprotocols
    subprotocol = state.auth.subprotocol(offered)
    try:
        grant = state.auth.authenticate(conn.query, offered)
    except AuthRefused as refused:
        state.metrics.protocol_errors.labels(refused.label).inc()
        refuse(conn, subprotocol, refused.code, refused.reason, jmsg.auth_error(refused))
        return
    routed_to: Session | None = None
    if (routed_id := conn.routed_session) is not None:
        try:
            routed_id = validate_session_id(routed_id)
            if grant is not None:
                grant.check_session(routed_id)
            routed_to = await state.manager.acquire(routed_id)
        except ValueError as exc:
            refuse(conn, subprotocol, codes.POLICY, f"invalid {SESSION_HEADER}: {exc}")
            return
        except AuthRefused as refused:
            state.metrics.protocol_errors.labels(refused.label).inc()
            refuse(conn, subprotocol, refused.code, refused.reason, jmsg.auth_error(refused))
            return
        except NotOwner as exc:
            error = jmsg.error(jmsg.SESSION_UNAVAILABLE, str(exc))
            refuse_not_owner(conn, subprotocol, exc, error)
            return
        except SessionUnavailable as exc:
            code = codes.RESTART if exc.draining else codes.TRY_AGAIN
            error = jmsg.error(jmsg.SESSION_UNAVAILABLE, exc.reason)
            refuse(conn, subprotocol, code, exc.reason, error)
            return
    json_conn = _JsonConnection(state, conn, grant, routed_to)
    if not conn.accept(subprotocol):
        json_conn.leave()  # the peer left while the session was being claimed or loaded
        return
    state.metrics.connections_active.labels("json").inc()
    conn.serve(json_conn.handle, json_conn.end)


class _JsonConnection:
    """One JSON client: its session once joined, its shadows, its replies in request order."""

    def __init__(
        self, state: WorkerState, client: Client, grant: Grant | None, routed_to: Session | None
    ) -> None:
        self.state = state
        self.client = client
        self.grant = grant  # None: authentication is off
        self.routed_to = routed_to  # acquired (reserved) before the join, when a router sent us
        self.session: Session | None = None
        self.shadows = files.Shadows()
        # Replies not sent yet because an earlier acknowledgement waits for storage:
        # (the update sequence number it waits for, or None; the message; when it arrived).
        self._replies: deque[tuple[int | None, str, float]] = deque()
        self._durable = state.settings.ack_mode == "durable"

    # --- replies, in request order ----------------------------------------------------------

    def reply(self, message: str) -> None:
        if self._replies:
            self._replies.append((None, message, 0.0))
        else:
            self.client.send(message)

    def acknowledge(self, session: Session, message: str, received: float) -> None:
        """Sends ``message`` once every edit made so far in the session is in storage."""
        outbox = session.outbox
        seq = outbox.applied_seq
        if not self._durable or (seq <= outbox.durable_seq and not self._replies):
            self.client.send(message)
            self.state.metrics.ack_seconds.observe(time.perf_counter() - received)
            return
        self._replies.append((seq, message, received))
        outbox.when_durable(seq, self._stored)
        self.state.manager.flusher.flush_soon(session.id, self.state.manager.spawn)

    def _stored(self, failure: str | None) -> None:
        session = self.session
        if failure is not None:
            # This worker will never store it (it lost its lease, or the session left while
            # storage refused): say so instead of acknowledging, and send the client on.
            for seq, message, _ in self._replies:
                if seq is not None:
                    self.client.send(jmsg.error(jmsg.FILE_OP_FAILED, f"{failure}; reconnect"))
                else:
                    self.client.send(message)
            self._replies.clear()
            self.client.close(codes.RESTART, f"{failure}; reconnect")
            return
        durable = session.outbox.durable_seq if session is not None else 0
        while self._replies and (self._replies[0][0] or 0) <= durable:
            seq, message, received = self._replies.popleft()
            self.client.send(message)
            if seq is not None:
                self.state.metrics.ack_seconds.observe(time.perf_counter() - received)

    # --- messages ---------------------------------------------------------------------------

    def handle(self, raw: Payload) -> Coroutine[Any, Any, None] | None:
        """Answers one message; a join that must claim or load its session, or a yjsUpdate
        whose client ID another live connection writes as, is returned, to run as a task
        while later messages wait (``worker.connection``)."""
        received = time.perf_counter()
        try:
            message = jmsg.parse(raw)
            if message["type"] == "join":
                return self._join_step(message)
            return self._dispatch(message, received)
        except jmsg.MessageError as exc:
            self.state.metrics.protocol_errors.labels("json").inc()
            self.reply(jmsg.error(exc.error, exc.reason))
        except SessionMoving as exc:
            self.reply(jmsg.error(jmsg.SESSION_UNAVAILABLE, str(exc)))
            self.client.close(codes.RESTART, str(exc))
        return None

    async def _join_step(self, message: dict[str, Any]) -> None:
        try:
            await self._join(message)
        except jmsg.MessageError as exc:
            self.state.metrics.protocol_errors.labels("json").inc()
            self.reply(jmsg.error(exc.error, exc.reason))

    def _dispatch(
        self, message: dict[str, Any], received: float
    ) -> Coroutine[Any, Any, None] | None:
        kind = message["type"]
        if kind == "ping":
            self.reply(jmsg.pong())
            return None
        session = self.session
        if session is None:
            raise jmsg.MessageError(jmsg.NOT_JOINED, "send a 'join' message first")
        user = self.client.user_id
        if kind in ("fileOperation", "yjsUpdate") and self.grant is not None:
            try:
                self.grant.check_write(session.id)
            except AuthRefused as refused:
                raise jmsg.MessageError(jmsg.FORBIDDEN, refused.reason) from None
        if kind == "fileOperation":
            data = jmsg.data_of(message, jmsg.FILE_OP_FAILED)
            try:
                files.apply_operation(session, user, data, self.shadows)
            except (files.FileOpError, LimitExceeded) as exc:
                raise jmsg.MessageError(jmsg.FILE_OP_FAILED, str(exc)) from None
            session.broadcast_json(jmsg.file_operation(user, data), exclude=self.client)
            self.acknowledge(session, jmsg.file_operation_success(), received)
        elif kind == "yjsUpdate":
            data = jmsg.data_of(message, jmsg.UPDATE_FAILED)
            try:
                doc_id = check_path(data.get("docId"))
            except PathRefused as exc:
                raise jmsg.MessageError(jmsg.UPDATE_FAILED, f"invalid docId: {exc}") from None
            update = jmsg.update_bytes(data.get("update"))
            author = yjs.update_author(update)
            if author is not None and (
                owner := session.authors.claim(
                    doc_id, author, self.client, lambda: session.brings_news(doc_id, update)
                )
            ):
                return self._contested(session, doc_id, author, owner, update)
            self._apply_update(session, doc_id, update)
        elif kind == "getFiles":
            data = jmsg.data_of(message, jmsg.LIST_FAILED, required=False)
            try:
                self.reply(jmsg.files(files.list_files(session, data.get("path"))))
            except PathRefused as exc:
                raise jmsg.MessageError(jmsg.LIST_FAILED, f"invalid path: {exc}") from None
        elif kind == "getFile":
            data = jmsg.data_of(message, jmsg.GET_FAILED)
            try:
                content = files.read_file(session, data.get("path"), self.shadows)
            except PathRefused as exc:
                raise jmsg.MessageError(jmsg.GET_FAILED, f"invalid path: {exc}") from None
            path = check_path(data.get("path"))
            self.reply(jmsg.file_content(path, content, session.binary_entry(path)))
        return None

    def _apply_update(self, session: Session, doc_id: str, update: bytes) -> None:
        try:
            session.apply_client_update(doc_id, update, self.client, lists=False)
        except UpdateRejected as exc:
            raise jmsg.MessageError(jmsg.UPDATE_FAILED, f"corrupt Yjs update: {exc}") from None
        except LimitExceeded as exc:
            raise jmsg.MessageError(jmsg.UPDATE_FAILED, exc.refusal.reason) from None

    async def _contested(
        self, session: Session, doc_id: str, author: int, owner: Client, update: bytes
    ) -> None:
        refusal = jmsg.error(jmsg.UPDATE_FAILED, conflicts.conflict_reason(author))
        if not await conflicts.settle(
            self.state, session, doc_id, author, owner, self.client, refusal
        ):
            return
        try:
            self._apply_update(session, doc_id, update)
        except jmsg.MessageError as exc:
            self.reply(jmsg.error(exc.error, exc.reason))
        except SessionMoving as exc:
            self.reply(jmsg.error(jmsg.SESSION_UNAVAILABLE, str(exc)))
            self.client.close(codes.RESTART, str(exc))

    async def _join(self, message: dict[str, Any]) -> None:
        if self.session is not None:
            raise jmsg.MessageError(jmsg.ALREADY_JOINED, "one session per connection")
        session_id, user_id = jmsg.join_ids(message)
        if self.grant is not None:
            try:
                self.grant.check_user(user_id)
                self.grant.check_session(session_id)
            except AuthRefused as refused:
                self.state.metrics.protocol_errors.labels(refused.label).inc()
                self.client.send(jmsg.auth_error(refused))
                self.client.close(refused.code, refused.reason)
                return
        routed, self.routed_to = self.routed_to, None
        if routed is not None and routed.id != session_id:
            routed.unreserve()
            reason = f"join names {session_id!r} but the router routed {routed.id!r}"
            self.client.send(jmsg.error(jmsg.INVALID_SESSION, reason))
            self.client.close(codes.POLICY, reason)
            return
        try:
            session = routed or await self.state.manager.acquire(session_id)
        except NotOwner as exc:
            self.client.send(jmsg.error(jmsg.SESSION_UNAVAILABLE, str(exc)))
            self.client.close(codes.TRY_AGAIN, str(exc))
            return
        except SessionUnavailable as exc:
            self.client.send(jmsg.error(jmsg.SESSION_UNAVAILABLE, exc.reason))
            self.client.close(codes.RESTART if exc.draining else codes.TRY_AGAIN, exc.reason)
            return
        self.client.user_id = user_id
        self.session = session
        session.attach(self.client, None)
        session.unreserve()
        self.client.send(
            jmsg.joined(session_id, self.client.user_id, self.state.settings.worker_id)
        )
        session.broadcast_json(jmsg.user_joined(self.client.user_id), exclude=self.client)
        log.info("user_joined", session=session_id, user=self.client.user_id)

    def end(self) -> None:
        """The connection is over (either side closed it, or the peer is gone)."""
        self.state.metrics.connections_active.labels("json").dec()
        self.leave()

    def leave(self) -> None:
        if self.routed_to is not None:  # routed here, but never joined
            self.routed_to.unreserve()
            self.routed_to = None
        session = self.session
        if session is None:
            return
        session.detach(self.client, None)
        session.broadcast_json(jmsg.user_left(self.client.user_id))
        self.session = None
