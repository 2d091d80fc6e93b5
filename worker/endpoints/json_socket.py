"""The seed's JSON protocol at ``/`` and ``/ws``: one session per connection.

Every failure answers ``{"type": "error", "error": <the seed's text>}`` (plus a ``reason`` where
the seed's text is generic) and leaves the connection and the session as they were. Refusals by
authentication (``worker.auth``) are the exception: their error is followed by close 4401 (at
connect) or 4403 (at the join, before the session is loaded).
"""

from __future__ import annotations

from typing import Any

import structlog
from starlette.types import Receive, Scope, Send

from contract import close_codes as codes
from contract import json_protocol as jmsg
from contract.auth import AuthRefused, Grant
from contract.paths import PathRefused, check_path

from .. import files
from ..client import Client
from ..connection import accept, pump, refuse
from ..manager import SessionUnavailable
from ..session import Session, SessionMoving, UpdateRejected
from .worker_state import WorkerState

log = structlog.get_logger("worker.json")


async def json_endpoint(state: WorkerState, scope: Scope, receive: Receive, send: Send) -> None:
    offered = scope.get("subprotocols") or []
    if not await accept(receive, send, state.auth.subprotocol(offered)):
        return
    try:
        grant = state.auth.authenticate(scope.get("query_string", b""), offered)
    except AuthRefused as refused:
        state.metrics.protocol_errors.labels(refused.label).inc()
        await refuse(send, refused.code, refused.reason, jmsg.auth_error(refused))
        return
    client = Client(
        state.settings.send_buffer_bytes, on_overflow=state.metrics.slow_clients_dropped.inc
    )
    conn = _JsonConnection(state, client, grant)
    gauge = state.metrics.connections_active.labels("json")
    gauge.inc()
    try:
        await pump(receive, send, client, conn.handle)
    finally:
        gauge.dec()
        conn.leave()


class _JsonConnection:
    def __init__(self, state: WorkerState, client: Client, grant: Grant | None) -> None:
        self.state = state
        self.client = client
        self.grant = grant  # None: authentication is off
        self.session: Session | None = None
        self.shadows = files.Shadows()

    async def handle(self, raw: bytes | str) -> None:
        try:
            message = jmsg.parse(raw)
            await self._dispatch(message)
        except jmsg.MessageError as exc:
            self.state.metrics.protocol_errors.labels("json").inc()
            self.client.send(jmsg.error(exc.error, exc.reason))
        except SessionMoving as exc:
            self.client.send(jmsg.error(jmsg.SESSION_UNAVAILABLE, str(exc)))
            self.client.close(codes.RESTART, str(exc))

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "ping":
            self.client.send(jmsg.pong())
            return
        if kind == "join":
            await self._join(message)
            return
        session = self.session
        if session is None:
            raise jmsg.MessageError(jmsg.NOT_JOINED, "send a 'join' message first")
        user = self.client.user_id
        if kind == "fileOperation":
            data = jmsg.data_of(message, jmsg.FILE_OP_FAILED)
            try:
                files.apply_operation(session, user, data, self.shadows)
            except files.FileOpError as exc:
                raise jmsg.MessageError(jmsg.FILE_OP_FAILED, str(exc)) from None
            session.broadcast_json(jmsg.file_operation(user, data), exclude=self.client)
            self.client.send(jmsg.file_operation_success())
        elif kind == "yjsUpdate":
            data = jmsg.data_of(message, jmsg.UPDATE_FAILED)
            try:
                doc_id = check_path(data.get("docId"))
            except PathRefused as exc:
                raise jmsg.MessageError(jmsg.UPDATE_FAILED, f"invalid docId: {exc}") from None
            update = jmsg.update_bytes(data.get("update"))
            try:
                session.apply_client_update(doc_id, update, self.client)
            except UpdateRejected as exc:
                raise jmsg.MessageError(jmsg.UPDATE_FAILED, f"corrupt Yjs update: {exc}") from None
        elif kind == "getFiles":
            data = jmsg.data_of(message, jmsg.LIST_FAILED, required=False)
            try:
                self.client.send(jmsg.files(files.list_files(session, data.get("path"))))
            except PathRefused as exc:
                raise jmsg.MessageError(jmsg.LIST_FAILED, f"invalid path: {exc}") from None
        elif kind == "getFile":
            data = jmsg.data_of(message, jmsg.GET_FAILED)
            try:
                content = files.read_file(session, data.get("path"), self.shadows)
            except PathRefused as exc:
                raise jmsg.MessageError(jmsg.GET_FAILED, f"invalid path: {exc}") from None
            path = check_path(data.get("path"))
            self.client.send(jmsg.file_content(path, content, session.binary_entry(path)))

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
        try:
            session = await self.state.manager.acquire(session_id)
        except SessionUnavailable as exc:
            self.client.send(jmsg.error(jmsg.SESSION_UNAVAILABLE, exc.reason))
            self.client.close(codes.RESTART if exc.draining else codes.TRY_AGAIN, exc.reason)
            return
        self.client.user_id = user_id
        self.session = session
        session.attach(self.client, None)
        self.client.send(
            jmsg.joined(session_id, self.client.user_id, self.state.settings.worker_id)
        )
        session.broadcast_json(jmsg.user_joined(self.client.user_id), exclude=self.client)
        log.info("user_joined", session=session_id, user=self.client.user_id)

    def leave(self) -> None:
        session = self.session
        if session is None:
            return
        session.detach(self.client, None)
        session.broadcast_json(jmsg.user_left(self.client.user_id))
        self.session = None
