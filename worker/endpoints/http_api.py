"""The HTTP API: a session's files, history and restore for bots, CI jobs and the web workspace.

One state, two views holds here too: a write is the JSON protocol's file operation (a CRDT edit
against the live text, so an editor's concurrent typing survives), and a restore is a CRDT edit
of the live documents to a commit's text, never a re-seed from text. **Acknowledged means
stored**: a 2xx to a write is sent once the edit is in storage (``ACK_MODE=applied``: at once).
The router routes ``/api/sessions/{id}/...`` to the session's owner like a WebSocket; a worker
that does not own it answers 421 naming the owner. The contract, with every status, is
``contract/openapi.py`` (served by the router at ``/api/openapi.json``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson
from pycrdt import Text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contract import json_protocol as jmsg
from contract.auth import AuthRefused, Grant
from contract.ids import is_name, validate_session_id
from contract.paths import PathRefused, check_path
from contract.routing import MISDIRECTED, OwnerHint
from contract.timefmt import iso_time

from .. import files, git_history
from ..autocommit import no_history
from ..limits import LimitExceeded
from ..manager import SessionUnavailable
from ..ownership import NotOwner
from ..session import Session, SessionMoving
from ..storage import SessionMeta, StorageError
from .worker_state import WorkerState, state_of

_LIST_LIMIT = 100


class ApiError(Exception):
    """An answer other than success: ``status`` and the body's ``error``/``reason``."""

    def __init__(
        self, status: int, error: str, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers or {}

    def response(self) -> Response:
        return JSONResponse(
            {"error": self.error, "reason": self.reason},
            status_code=self.status,
            headers=self.headers,
        )


Handler = Callable[[Request], Awaitable[Response]]


def _answering(handler: Handler) -> Handler:
    async def answered(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()

    return answered


# --- the pieces every route shares ---------------------------------------------------------


def _grant(request: Request, session_id: str | None, *, write: bool = False) -> Grant | None:
    try:
        grant = state_of(request).auth.authenticate_bearer(request.headers.get("authorization"))
        if grant is not None and session_id is not None:
            grant.check_session(session_id)
            if write:
                grant.check_write(session_id)
    except AuthRefused as refused:
        status = 403 if refused.code == 4403 else 401
        error = jmsg.FORBIDDEN if status == 403 else jmsg.UNAUTHENTICATED
        raise ApiError(status, error, refused.reason) from None
    return grant


def _session_id(request: Request) -> str:
    try:
        return validate_session_id(request.path_params["session"])
    except ValueError as exc:
        raise ApiError(400, jmsg.INVALID_SESSION, str(exc)) from None


def _path(raw: object, error: str) -> str:
    try:
        return check_path(raw)
    except PathRefused as exc:
        raise ApiError(400, error, f"invalid path: {exc}") from None


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object; 413 past MAX_MESSAGE_BYTES, 400 when it is not one."""
    limit = state_of(request).settings.max_message_bytes
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ApiError(
                413, jmsg.INVALID_FORMAT, f"body exceeds the {limit}-byte limit (MAX_MESSAGE_BYTES)"
            )
    try:
        body = orjson.loads(bytes(data)) if data else {}
    except orjson.JSONDecodeError:
        raise ApiError(400, jmsg.INVALID_FORMAT, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, jmsg.INVALID_FORMAT, "body must be a JSON object")
    return body


class _Using:
    """``manager.using`` with its refusals as answers (421 naming the owner, 503)."""

    def __init__(self, state: WorkerState, session_id: str) -> None:
        self._cm = state.manager.using(session_id)

    async def __aenter__(self) -> Session:
        try:
            return await self._cm.__aenter__()
        except NotOwner as exc:
            record = exc.record
            hint = OwnerHint(record.worker, record.address, record.epoch)
            headers = {k.decode(): v.decode() for k, v in hint.headers()}
            raise ApiError(MISDIRECTED, jmsg.SESSION_UNAVAILABLE, str(exc), headers) from None
        except SessionUnavailable as exc:
            raise ApiError(503, jmsg.SESSION_UNAVAILABLE, exc.reason) from None

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(None, None, None)


async def _stored(state: WorkerState, session: Session, received: float) -> None:
    """Returns once every edit made so far in the session is in storage."""
    outbox = session.outbox
    if state.settings.ack_mode == "durable" and outbox.applied_seq > outbox.durable_seq:
        done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

        def settle(failure: str | None) -> None:
            if not done.done():
                done.set_result(failure)

        outbox.when_durable(outbox.applied_seq, settle)
        state.manager.flusher.flush_soon(session.id, state.manager.spawn)
        failure = await done
        if failure is not None:
            raise ApiError(503, jmsg.SESSION_UNAVAILABLE, f"{failure}; retry")
    state.metrics.ack_seconds.observe(time.perf_counter() - received)


def _user(grant: Grant | None) -> str:
    return grant.user if grant is not None else "api"


def _file_op(
    session: Session, user: str, op: dict[str, Any], shadows: files.Shadows | None = None
) -> None:
    try:
        files.apply_operation(session, user, op, shadows)
    except files.FileOpError as exc:
        raise ApiError(409, jmsg.FILE_OP_FAILED, str(exc)) from None
    except LimitExceeded as exc:
        raise ApiError(413, jmsg.FILE_OP_FAILED, exc.refusal.reason) from None
    except SessionMoving as exc:
        raise ApiError(503, jmsg.SESSION_UNAVAILABLE, str(exc)) from None


# --- sessions --------------------------------------------------------------------------------


async def list_sessions(request: Request) -> Response:
    grant = _grant(request, None)
    store = state_of(request).store
    try:
        ids = await store.list_sessions()
        if grant is not None and grant.sessions != "*":
            ids = [i for i in ids if i in grant.sessions]
        metas: dict[str, SessionMeta | None] = {}
        limiter = anyio.CapacityLimiter(16)

        async def meta(session_id: str) -> None:
            async with limiter:
                metas[session_id] = await store.get_meta(session_id)

        async with anyio.create_task_group() as tg:
            for session_id in ids:
                tg.start_soon(meta, session_id)
    except StorageError as exc:
        raise ApiError(503, jmsg.SESSION_UNAVAILABLE, f"storage unavailable: {exc}") from None
    rows = [
        {
            "id": session_id,
            "lastActive": m.last_active if m else None,
            "users": list(m.users) if m else [],
            "isGitRepo": bool(m and m.is_git_repo),
        }
        for session_id, m in metas.items()
    ]
    rows.sort(key=lambda r: str(r["lastActive"] or ""), reverse=True)
    return JSONResponse({"sessions": rows[:_LIST_LIMIT]})


async def create_session(request: Request) -> Response:
    body = await _body(request)
    raw = body.get("id")
    session_id = raw if raw is not None else f"s-{secrets.token_hex(4)}"
    if not isinstance(session_id, str) or not is_name(session_id):
        raise ApiError(400, jmsg.INVALID_SESSION, f"invalid session id {session_id!r}")
    _grant(request, session_id, write=True)
    store = state_of(request).store
    try:
        if await store.session_exists(session_id):
            raise ApiError(409, jmsg.INVALID_SESSION, f"session {session_id} exists already")
        # A git session from the start: auto-commit and history work for it like for imports.
        await store.put_meta(session_id, SessionMeta.new(is_git_repo=True))
    except StorageError as exc:
        raise ApiError(503, jmsg.SESSION_UNAVAILABLE, f"storage unavailable: {exc}") from None
    return JSONResponse({"id": session_id}, status_code=201)


# --- files -----------------------------------------------------------------------------------


async def list_files(request: Request) -> Response:
    session_id = _session_id(request)
    _grant(request, session_id)
    async with _Using(state_of(request), session_id) as session:
        rows = []
        for path in session.file_paths():
            entry = session.binary_entry(path)
            if entry is not None:
                rows.append({"path": path, "type": "binary", "size": entry.get("size")})
            else:
                rows.append({"path": path, "type": "text"})
    return JSONResponse({"files": rows})


async def read_file(request: Request) -> Response:
    session_id = _session_id(request)
    _grant(request, session_id)
    path = _path(request.path_params["path"], jmsg.GET_FAILED)
    async with _Using(state_of(request), session_id) as session:
        if not session.has_file(path):
            raise ApiError(404, jmsg.GET_FAILED, f"no file at {path!r}")
        entry = session.binary_entry(path)
        if entry is not None:
            return JSONResponse(
                {
                    "path": path,
                    "content": None,
                    "binary": True,
                    "size": entry.get("size"),
                    "sha256": entry.get("sha256"),
                }
            )
        replica = session.copy_doc(path)
        version = session.remember_version(path, replica)
        return JSONResponse(
            {"path": path, "content": str(replica.get("content", type=Text)), "version": version}
        )


async def write_file(request: Request) -> Response:
    received = time.perf_counter()
    state = state_of(request)
    session_id = _session_id(request)
    grant = _grant(request, session_id, write=True)
    path = _path(request.path_params["path"], jmsg.FILE_OP_FAILED)
    body = await _body(request)
    content, base = body.get("content"), body.get("base")
    if not isinstance(content, str):
        raise ApiError(400, jmsg.FILE_OP_FAILED, "'content' must be a string")
    if base is not None and not isinstance(base, str):
        raise ApiError(400, jmsg.FILE_OP_FAILED, "'base' must be a version from a read")
    async with _Using(state, session_id) as session:
        created = not session.has_file(path)
        # With ``base`` (the version a read returned), the change is made on the text as it
        # was read and merged, so what others typed since survives (the JSON protocol's
        # shadows); without it, the content replaces the current text (minimal edits).
        shadows = files.Shadows(1)
        if base is not None:
            found = session.version(base)
            if found is None or found[0] != path or created:
                raise ApiError(
                    409,
                    jmsg.FILE_OP_FAILED,
                    f"unknown or used base version for {path!r}; read the file again",
                )
            shadows.remember(path, found[1])
        op = {"type": "create", "path": path, "content": content}
        _file_op(session, _user(grant), op, shadows)
        replica = shadows.get(path)
        version = session.remember_version(path, replica) if replica is not None else None
        await _stored(state, session, received)
    return JSONResponse({"path": path, "created": created, "version": version})


async def delete_file(request: Request) -> Response:
    received = time.perf_counter()
    state = state_of(request)
    session_id = _session_id(request)
    grant = _grant(request, session_id, write=True)
    path = _path(request.path_params["path"], jmsg.FILE_OP_FAILED)
    async with _Using(state, session_id) as session:
        if not session.has_file(path):
            raise ApiError(404, jmsg.FILE_OP_FAILED, f"no file at {path!r}")
        _file_op(session, _user(grant), {"type": "delete", "path": path})
        await _stored(state, session, received)
    return JSONResponse({"path": path, "deleted": True})


async def rename_file(request: Request) -> Response:
    received = time.perf_counter()
    state = state_of(request)
    session_id = _session_id(request)
    grant = _grant(request, session_id, write=True)
    body = await _body(request)
    old = _path(body.get("from"), jmsg.FILE_OP_FAILED)
    new = _path(body.get("to"), jmsg.FILE_OP_FAILED)
    async with _Using(state, session_id) as session:
        if not session.has_file(old):
            raise ApiError(404, jmsg.FILE_OP_FAILED, f"no file at {old!r} to rename")
        if session.has_file(new):
            raise ApiError(409, jmsg.FILE_OP_FAILED, f"{new!r} exists already")
        op = {"type": "rename", "oldPath": old, "newPath": new}
        _file_op(session, _user(grant), op)
        await _stored(state, session, received)
    return JSONResponse({"from": old, "to": new})


# --- git: commit, history, restore -----------------------------------------------------------


async def commit(request: Request) -> Response:
    state = state_of(request)
    session_id = _session_id(request)
    _grant(request, session_id, write=True)
    async with _Using(state, session_id) as session:
        if not session.is_git:
            raise ApiError(409, jmsg.FILE_OP_FAILED, no_history(session_id))
        try:
            outcome = await state.manager.autocommit.commit(session, force=True)
        except Exception as exc:  # logged with its traceback and counted in commit()
            raise ApiError(503, jmsg.SESSION_UNAVAILABLE, f"commit failed: {exc}") from None
    assert outcome is not None
    return JSONResponse(
        {
            "commit": outcome.sha,
            "changed": list(outcome.changed),
            "result": "committed" if outcome.sha else "nothing changed",
        }
    )


async def list_history(request: Request) -> Response:
    state = state_of(request)
    session_id = _session_id(request)
    _grant(request, session_id)
    try:
        found = await git_history.commits(
            state.store, session_id, state.settings.git_cache(session_id)
        )
    except (StorageError, OSError) as exc:
        raise ApiError(503, jmsg.SESSION_UNAVAILABLE, f"history unavailable: {exc}") from None
    return JSONResponse(
        {
            "commits": [
                {
                    "sha": c.sha,
                    "author": c.author,
                    "coauthors": list(c.coauthors),
                    "message": c.message,
                    "time": iso_time(c.time),
                    "files": list(c.files),
                }
                for c in found
            ]
        }
    )


async def _at_commit(request: Request, session_id: str, sha: str) -> dict[str, bytes]:
    state = state_of(request)
    try:
        return await git_history.files_at(
            state.store, session_id, state.settings.git_cache(session_id), sha
        )
    except git_history.NoSuchCommit:
        raise ApiError(404, jmsg.GET_FAILED, f"no commit {sha[:40]!r} in this history") from None
    except (StorageError, OSError) as exc:
        raise ApiError(503, jmsg.SESSION_UNAVAILABLE, f"history unavailable: {exc}") from None


def _text(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(409, jmsg.GET_FAILED, f"{path!r} is binary at that commit") from None


async def file_at_commit(request: Request) -> Response:
    session_id = _session_id(request)
    _grant(request, session_id)
    path = _path(request.path_params["path"], jmsg.GET_FAILED)
    sha = request.path_params["sha"]
    tree = await _at_commit(request, session_id, sha)
    if path not in tree:
        raise ApiError(404, jmsg.GET_FAILED, f"no file at {path!r} in commit {sha[:12]}")
    return JSONResponse({"path": path, "commit": sha, "content": _text(tree[path], path)})


async def diff_file(request: Request) -> Response:
    session_id = _session_id(request)
    _grant(request, session_id)
    path = _path(request.path_params["path"], jmsg.GET_FAILED)
    sha = request.path_params["sha"]
    tree = await _at_commit(request, session_id, sha)
    old = _text(tree[path], path) if path in tree else None
    async with _Using(state_of(request), session_id) as session:
        now = str(session.text(path)) if session.has_file(path) else None
    if old is None and now is None:
        raise ApiError(404, jmsg.GET_FAILED, f"no file at {path!r} then or now")
    return JSONResponse(
        {"path": path, "commit": sha, "diff": git_history.unified_diff(path, sha, old, now)}
    )


async def restore(request: Request) -> Response:
    """A file (or every file) back to a commit's text, as CRDT edits of the live documents."""
    received = time.perf_counter()
    state = state_of(request)
    session_id = _session_id(request)
    grant = _grant(request, session_id, write=True)
    body = await _body(request)
    sha = body.get("commit")
    if not isinstance(sha, str):
        raise ApiError(400, jmsg.FILE_OP_FAILED, "'commit' must be a commit id")
    only = _path(body["path"], jmsg.FILE_OP_FAILED) if body.get("path") is not None else None
    tree = await _at_commit(request, session_id, sha)
    user = _user(grant)
    restored: list[str] = []
    async with _Using(state, session_id) as session:
        current = {p for p in session.file_paths() if session.binary_entry(p) is None}
        paths = [only] if only is not None else sorted(current | set(tree))
        # Binary files are not edited as text; they stay as they are.
        paths = [path for path in paths if session.binary_entry(path) is None]
        # Every check before the first edit: a restore is refused whole or applied whole.
        texts = {path: _text(tree[path], path) for path in paths if path in tree}
        try:
            files.admit_texts(session, user, texts)
        except LimitExceeded as exc:
            raise ApiError(413, jmsg.FILE_OP_FAILED, exc.refusal.reason) from None
        for path in paths:
            if path in texts:
                text = texts[path]
                if not session.has_file(path) or str(session.text(path)) != text:
                    _file_op(session, user, {"type": "create", "path": path, "content": text})
                    restored.append(path)
            elif session.has_file(path):
                _file_op(session, user, {"type": "delete", "path": path})
                restored.append(path)
        session.log("restore", user, only or "", 0, commit=sha, files=restored)
        await _stored(state, session, received)
    return JSONResponse({"commit": sha, "restored": restored})


http_api_routes = [
    Route("/api/sessions", _answering(list_sessions), methods=["GET"]),
    Route("/api/sessions", _answering(create_session), methods=["POST"]),
    Route("/api/sessions/{session}/files", _answering(list_files), methods=["GET"]),
    Route("/api/sessions/{session}/files/{path:path}", _answering(read_file), methods=["GET"]),
    Route("/api/sessions/{session}/files/{path:path}", _answering(write_file), methods=["PUT"]),
    Route("/api/sessions/{session}/files/{path:path}", _answering(delete_file), methods=["DELETE"]),
    Route("/api/sessions/{session}/rename", _answering(rename_file), methods=["POST"]),
    Route("/api/sessions/{session}/commit", _answering(commit), methods=["POST"]),
    Route("/api/sessions/{session}/history", _answering(list_history), methods=["GET"]),
    Route(
        "/api/sessions/{session}/history/{sha}/files/{path:path}",
        _answering(file_at_commit),
        methods=["GET"],
    ),
    Route(
        "/api/sessions/{session}/history/{sha}/diff/{path:path}",
        _answering(diff_file),
        methods=["GET"],
    ),
    Route("/api/sessions/{session}/restore", _answering(restore), methods=["POST"]),
]
