"""``create_app(settings)``: the worker's one lifespan and its routes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .admin import require_admin
from .endpoints.json import json_endpoint
from .endpoints.state import WorkerState
from .endpoints.yjs import yjs_endpoint
from .metrics import WorkerMetrics
from .sessions import SessionManager, SessionUnavailable
from .settings import Settings
from .storage import (
    InstrumentedStore,
    SessionStore,
    StorageError,
    Store,
    store_for,
    validate_session_id,
)

log = structlog.get_logger("worker.app")


class WorkerApp:
    """WebSockets go straight to their endpoint; HTTP and the lifespan go to Starlette."""

    def __init__(self, http: Starlette) -> None:
        self.http: ASGIApp = http
        self.state = http.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.http(scope, receive, send)
            return
        state: WorkerState = self.state.worker
        path: str = scope["path"]
        if path.startswith("/yjs/"):
            await yjs_endpoint(state, scope, path[5:], receive, send)
        elif path in ("/", "/ws"):
            await json_endpoint(state, scope, receive, send)
        else:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": "unknown path"})


def create_app(settings: Settings, store: Store | None = None) -> WorkerApp:
    """The worker app; ``store`` overrides the one described by ``settings.storage``."""
    metrics = WorkerMetrics()
    started = time.monotonic()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raw = store if store is not None else store_for(settings.storage)
        session_store = SessionStore(
            InstrumentedStore(raw, metrics.storage_request), settings.worker_id
        )
        manager = SessionManager(settings, session_store, metrics)
        state = WorkerState(settings, metrics, session_store, manager)
        app.state.worker = state
        log.info(
            "worker_started",
            worker=settings.worker_id,
            port=settings.port,
            storage=settings.storage.describe(),
            flush_interval_ms=settings.flush_interval_ms,
        )
        if (warning := state.auth.startup_warning()) is not None:
            event, fields = warning
            log.warning(event, **fields)  # auth_disabled: loud, once, next to worker_started
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(manager.run)
                tg.start_soon(metrics.watch_event_loop)
                state.ready = True
                try:
                    yield
                finally:
                    with anyio.CancelScope(shield=True):
                        state.ready = False
                        if manager.sessions:
                            await manager.drain(settings.drain_timeout_ms / 1000)
                        tg.cancel_scope.cancel()
        finally:
            if store is None:
                with anyio.CancelScope(shield=True):
                    await raw.aclose()
            log.info("worker_stopped", worker=settings.worker_id)

    def worker(request: Request) -> WorkerState:
        state: WorkerState = request.app.state.worker
        return state

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "worker": settings.worker_id})

    async def readyz(request: Request) -> Response:
        state = worker(request)
        manager = state.manager
        if manager.draining:
            status = "draining"
        elif not state.ready:
            status = "starting"
        else:
            status = "ready"
        unflushed, age = manager.update_lag_metrics()
        body = {
            "state": status,
            "worker": settings.worker_id,
            "sessions": len(manager.sessions),
            "connections": int(
                metrics.value("collab_connections_active", protocol="yjs")
                + metrics.value("collab_connections_active", protocol="json")
            ),
            # Storage trouble is reported, not turned into 503: every worker shares the same
            # storage, so moving sessions elsewhere would not help, and this worker keeps
            # serving and holding the edits until storage is back.
            "storage": "ok" if manager.storage_ok else "unavailable",
            "storageError": manager.storage_error,
            "unflushedBytes": unflushed,
            "unflushedAgeSeconds": round(age, 3),
        }
        return JSONResponse(body, status_code=200 if status == "ready" else 503)

    async def metrics_endpoint(request: Request) -> Response:
        worker(request).manager.update_lag_metrics()
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    async def admin_status(request: Request) -> Response:
        """Everything `collab status` shows about this worker, read from live state."""
        manager = worker(request).manager
        unflushed, age = manager.update_lag_metrics()
        by_protocol = {
            p: int(metrics.value("collab_connections_active", protocol=p)) for p in ("yjs", "json")
        }
        return JSONResponse(
            {
                "worker": settings.worker_id,
                "state": "draining" if manager.draining else "active",
                "sessions": len(manager.sessions),
                "connections": sum(by_protocol.values()),
                "connectionsByProtocol": by_protocol,
                "documents": sum(s.documents for s in manager.sessions.values()),
                "storage": "ok" if manager.storage_ok else "unavailable",
                "storageError": manager.storage_error,
                "unflushedBytes": unflushed,
                "unflushedAgeSeconds": round(age, 3),
                "eventLoopLagSeconds": metrics.value("collab_event_loop_lag_seconds"),
                "uptimeSeconds": round(time.monotonic() - started, 1),
                "drain": manager.drain_status(),
                "recentCommits": list(manager.autocommit.recent),
            }
        )

    async def admin_sessions(request: Request) -> Response:
        manager = worker(request).manager
        return JSONResponse(
            {
                "worker": settings.worker_id,
                "sessions": [s.describe() for s in manager.sessions.values()],
            }
        )

    async def admin_drain(request: Request) -> Response:
        """Starts draining and answers at once (202); progress is in ``/admin/status``."""
        manager = worker(request).manager
        manager.start_drain(settings.drain_timeout_ms / 1000)
        return JSONResponse(
            {"worker": settings.worker_id, "state": "draining", **manager.drain_status()},
            status_code=202,
        )

    async def admin_undrain(request: Request) -> Response:
        worker(request).manager.undrain()
        return JSONResponse({"worker": settings.worker_id, "state": "active"})

    async def admin_session(request: Request) -> Response:
        session = worker(request).manager.sessions.get(request.path_params["session"])
        if session is None:
            return JSONResponse(
                {"error": "session is not live on this worker", "worker": settings.worker_id},
                status_code=404,
            )
        return JSONResponse({"worker": settings.worker_id, **session.describe()})

    async def admin_handoff(request: Request) -> Response:
        manager = worker(request).manager
        result = await manager.hand_off(
            request.path_params["session"], settings.drain_timeout_ms / 1000
        )
        return JSONResponse({"worker": settings.worker_id, **result})

    async def admin_commit(request: Request) -> Response:
        manager = worker(request).manager
        session_id = request.path_params["session"]
        session = manager.sessions.get(session_id)
        if session is None:
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
                return JSONResponse(
                    {"error": f"no session {session_id} in storage"}, status_code=404
                )
            try:
                session = await manager.acquire(session_id)
            except SessionUnavailable as exc:
                return JSONResponse({"error": exc.reason}, status_code=409 if exc.draining else 503)
        if not session.is_git:
            return JSONResponse(
                {"error": f"session {session_id} has no git history; nothing is committed"},
                status_code=409,
            )
        try:
            outcome = await manager.autocommit.commit(session, force=True)
        except Exception as exc:
            return JSONResponse({"error": f"commit failed: {exc}"}, status_code=503)
        assert outcome is not None
        return JSONResponse(
            {
                "worker": settings.worker_id,
                "sessionId": session_id,
                "commit": outcome.sha,
                "changed": list(outcome.changed),
                "merged": outcome.merged,
                "result": "committed" if outcome.sha else "nothing changed",
            }
        )

    async def index(request: Request) -> Response:
        return JSONResponse(
            {
                "service": "collab-worker",
                "worker": settings.worker_id,
                "protocols": {"json": "/ (or /ws)", "yjs": "/yjs/{session}/{path}"},
            }
        )

    token = settings.admin_token
    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/admin/status", require_admin(token, admin_status)),
        Route("/admin/sessions", require_admin(token, admin_sessions)),
        Route("/admin/sessions/{session}", require_admin(token, admin_session)),
        Route(
            "/admin/sessions/{session}/handoff",
            require_admin(token, admin_handoff),
            methods=["POST"],
        ),
        Route(
            "/admin/sessions/{session}/commit",
            require_admin(token, admin_commit),
            methods=["POST"],
        ),
        Route("/admin/drain", require_admin(token, admin_drain), methods=["POST"]),
        Route("/admin/undrain", require_admin(token, admin_undrain), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.metrics = metrics
    return WorkerApp(app)
