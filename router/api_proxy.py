"""The HTTP API through the router: ``/api/sessions/{id}/...`` routed to the owner like a WebSocket.

The router checks the token and the session against it first (a refused request never reaches
a worker), then sends the request to the ring's proposed owner; a worker that does not own the
session answers 421 naming the owner (``contract.routing``), and the request goes there, once.
Requests without a session (the list, a new session) go to any ready worker. The OpenAPI
description (``contract.openapi``) and ``whoami`` are the router's own answers.
"""

from __future__ import annotations

import secrets

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contract import json_protocol as jmsg
from contract.auth import AuthRefused, Grant
from contract.ids import validate_session_id
from contract.openapi import SPEC
from contract.routing import MISDIRECTED, ROUTER_HEADER, OwnerHint

from .http_state import http_state
from .membership import WorkerInfo, describe_error

# A worker answers once it has claimed and loaded the session (and, for a write, stored it),
# which may wait for an unreachable previous owner's lease.
_UPSTREAM_TIMEOUT_S = 30.0
_FORWARDED = ("authorization", "content-type", "accept")


def _error(status: int, error: str, reason: str) -> Response:
    return JSONResponse({"error": error, "reason": reason}, status_code=status)


def _grant(request: Request, session_id: str | None, write: bool) -> Grant | None:
    grant = http_state(request).proxy.auth.authenticate_bearer(request.headers.get("authorization"))
    if grant is not None and session_id is not None:
        grant.check_session(session_id)
        if write:
            grant.check_write(session_id)
    return grant


async def _send(request: Request, worker: WorkerInfo, body: bytes) -> httpx.Response:
    h = http_state(request)
    headers = {k: v for k, v in request.headers.items() if k in _FORWARDED}
    headers[ROUTER_HEADER] = h.settings.router_id
    if request.client is not None:
        headers["x-forwarded-for"] = request.client.host
    url = f"http://{worker.address}{request.url.path}"
    if request.url.query:
        url += "?" + request.url.query
    return await h.proxy.http.request(
        request.method, url, headers=headers, content=body, timeout=_UPSTREAM_TIMEOUT_S
    )


async def _forward(request: Request, worker: WorkerInfo | None, session: str | None) -> Response:
    h = http_state(request)
    if worker is None:
        return _error(503, jmsg.SESSION_UNAVAILABLE, "no worker is ready; retry shortly")
    limit = h.settings.max_message_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return _error(413, jmsg.INVALID_FORMAT, f"body exceeds the {limit}-byte limit")
    for hop in (1, 2):
        try:
            answer = await _send(request, worker, bytes(body))
        except httpx.HTTPError as exc:
            h.metrics.upstream_errors.inc()
            return _error(
                503,
                jmsg.SESSION_UNAVAILABLE,
                f"worker {worker.name} at {worker.address} unreachable "
                f"({describe_error(exc)}); retry",
            )
        if answer.status_code == MISDIRECTED and hop == 1:
            hint = OwnerHint.from_headers(answer.headers.get)
            if hint is None:
                break
            h.metrics.redirects.inc()
            known = h.membership.find(hint.worker)
            worker = known if known is not None else WorkerInfo(*hint.host_port, id=hint.worker)
            continue
        break
    return Response(
        answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
    )


async def session_api(request: Request) -> Response:
    """Everything under ``/api/sessions/{id}/``: to the session's owner."""
    try:
        session = validate_session_id(request.path_params["session"])
    except ValueError as exc:
        return _error(400, jmsg.INVALID_SESSION, str(exc))
    try:
        _grant(request, session, write=request.method not in ("GET", "HEAD"))
    except AuthRefused as refused:
        return _refused(refused)
    return await _forward(request, http_state(request).membership.owner(session), session)


async def sessions_api(request: Request) -> Response:
    """``GET /api/sessions`` (the list) and ``POST`` (a new session): any ready worker reads and
    writes storage for them; the ring picks one at random."""
    h = http_state(request)
    try:
        _grant(request, None, write=False)
    except AuthRefused as refused:
        return _refused(refused)
    return await _forward(request, h.membership.owner(secrets.token_hex(8)), None)


async def whoami(request: Request) -> Response:
    h = http_state(request)
    required = h.settings.auth_secret is not None
    try:
        grant = _grant(request, None, write=False)
    except AuthRefused as refused:
        return _refused(refused)
    if grant is None:
        return JSONResponse(
            {"user": None, "sessions": "*", "readonly": False, "authRequired": required}
        )
    # readonly: true (every session), false, or the list of read-only session ids.
    readonly: bool | list[str] = True if grant.readonly == "*" else sorted(grant.readonly) or False
    return JSONResponse(
        {
            "user": grant.user,
            "sessions": grant.sessions if grant.sessions == "*" else sorted(grant.sessions),
            "readonly": readonly,
            "authRequired": required,
        }
    )


async def openapi(request: Request) -> Response:
    return Response(orjson.dumps(SPEC), media_type="application/json")


def _refused(refused: AuthRefused) -> Response:
    status = 403 if refused.code == 4403 else 401
    return _error(status, jmsg.FORBIDDEN if status == 403 else jmsg.UNAUTHENTICATED, refused.reason)


api_routes = [
    Route("/api/openapi.json", openapi, methods=["GET"]),
    Route("/api/whoami", whoami, methods=["GET"]),
    Route("/api/sessions", sessions_api, methods=["GET", "POST"]),
    Route(
        "/api/sessions/{session}/{rest:path}",
        session_api,
        methods=["GET", "PUT", "POST", "DELETE"],
    ),
]
