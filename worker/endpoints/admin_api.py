"""The worker's admin API (bearer ``ADMIN_TOKEN``): status, sessions, drain, hand-off, commit.

Routers aggregate these (router/http_app.py); `collab` reaches them through a router. The worker is
the source of truth for its sessions and its drain state.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contract.admin_token import Endpoint, require_admin
from contract.ids import validate_session_id
from contract.routing import MISDIRECTED

from ..autocommit import no_history
from ..manager import SessionManager, SessionUnavailable
from ..ownership import NotOwner
from ..session import Session
from ..storage import StorageError
from .worker_state import state_of


async def admin_status(request: Request) -> Response:
    """Everything `collab status` shows about this worker, read from live state."""
    state = state_of(request)
    manager, settings = state.manager, state.settings
    return JSONResponse(
        {
            "worker": settings.worker_id,
            "state": "draining" if manager.draining else "active",
            **state.load_and_durability(),
            "connectionsByProtocol": state.connections_by_protocol(),
            "documents": sum(s.documents for s in manager.sessions.values()),
            "eventLoopLagSeconds": state.metrics.value("collab_event_loop_lag_seconds"),
            "uptimeSeconds": round(time.monotonic() - state.started, 1),
            "drain": manager.handoff.status(),
            "recentCommits": list(manager.autocommit.recent),
        }
    )


async def admin_sessions(request: Request) -> Response:
    state = state_of(request)
    manager, settings = state.manager, state.settings
    return JSONResponse(
        {
            "worker": settings.worker_id,
            "sessions": [s.describe() for s in manager.sessions.values()],
        }
    )


async def admin_drain(request: Request) -> Response:
    """Starts draining and answers at once (202); progress is in ``/admin/status``."""
    state = state_of(request)
    manager, settings = state.manager, state.settings
    manager.handoff.start_drain(settings.drain_timeout_ms / 1000)
    return JSONResponse(
        {"worker": settings.worker_id, "state": "draining", **manager.handoff.status()},
        status_code=202,
    )


async def admin_undrain(request: Request) -> Response:
    state = state_of(request)
    state.manager.handoff.undrain()
    return JSONResponse({"worker": state.settings.worker_id, "state": "active"})


async def admin_session(request: Request) -> Response:
    state = state_of(request)
    settings = state.settings
    session = state.manager.sessions.get(request.path_params["session"])
    if session is None:
        return JSONResponse(
            {"error": "session is not live on this worker", "worker": settings.worker_id},
            status_code=404,
        )
    return JSONResponse({"worker": settings.worker_id, **session.describe()})


async def admin_handoff(request: Request) -> Response:
    state = state_of(request)
    manager, settings = state.manager, state.settings
    result = await manager.handoff.hand_off(
        request.path_params["session"], settings.drain_timeout_ms / 1000
    )
    return JSONResponse({"worker": settings.worker_id, **result})


async def admin_commit(request: Request) -> Response:
    manager = state_of(request).manager
    session_id = request.path_params["session"]
    if session_id not in manager.sessions:
        # Not live here: load it (it unloads again after SESSION_IDLE_MS), so edits that a
        # killed worker left uncommitted in storage can be committed on demand.
        try:
            validate_session_id(session_id)
            exists = await manager.store.session_exists(session_id)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except StorageError as exc:
            return JSONResponse({"error": f"storage unavailable: {exc}"}, status_code=503)
        if not exists:
            return JSONResponse({"error": f"no session {session_id} in storage"}, status_code=404)
    try:
        async with manager.using(session_id) as session:
            return await commit_now(manager, session)
    except NotOwner as exc:
        return JSONResponse({"error": str(exc), **exc.record.describe()}, status_code=MISDIRECTED)
    except SessionUnavailable as exc:
        return JSONResponse({"error": exc.reason}, status_code=409 if exc.draining else 503)


async def commit_now(manager: SessionManager, session: Session) -> Response:
    if not session.is_git:
        return JSONResponse({"error": no_history(session.id)}, status_code=409)
    try:
        outcome = await manager.autocommit.commit(session, force=True)
    except Exception as exc:
        return JSONResponse({"error": f"commit failed: {exc}"}, status_code=503)
    assert outcome is not None
    return JSONResponse(
        {
            "worker": manager.settings.worker_id,
            "sessionId": session.id,
            "commit": outcome.sha,
            "changed": list(outcome.changed),
            "merged": outcome.merged,
            "result": "committed" if outcome.sha else "nothing changed",
        }
    )


async def admin_ownership(request: Request) -> Response:
    """The session's ownership record as storage has it (``collab locate``)."""
    state = state_of(request)
    manager, settings = state.manager, state.settings
    session_id = request.path_params["session"]
    try:
        record = await manager.ownership.lookup(validate_session_id(session_id))
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except StorageError as exc:
        return JSONResponse({"error": f"storage unavailable: {exc}"}, status_code=503)
    return JSONResponse(
        {
            "sessionId": session_id,
            "askedWorker": settings.worker_id,
            "record": record.describe() if record is not None else None,
        }
    )


def admin_routes(token: str | None) -> list[Route]:
    """The admin routes, each behind the bearer ``token`` (refused when there is none)."""

    def guard(endpoint: Endpoint) -> Endpoint:
        return require_admin(token, endpoint)

    return [
        Route("/admin/status", guard(admin_status)),
        Route("/admin/sessions", guard(admin_sessions)),
        Route("/admin/sessions/{session}", guard(admin_session)),
        Route("/admin/sessions/{session}/handoff", guard(admin_handoff), methods=["POST"]),
        Route("/admin/sessions/{session}/commit", guard(admin_commit), methods=["POST"]),
        Route("/admin/sessions/{session}/ownership", guard(admin_ownership)),
        Route("/admin/drain", guard(admin_drain), methods=["POST"]),
        Route("/admin/undrain", guard(admin_undrain), methods=["POST"]),
    ]
