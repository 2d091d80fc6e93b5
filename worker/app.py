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

from .endpoints.admin_api import admin_routes
from .endpoints.http_api import http_api_routes
from .endpoints.peer_api import peer_routes
from .endpoints.worker_state import WorkerState
from .manager import SessionManager
from .metrics import WorkerMetrics
from .settings import Settings
from .storage import (
    InstrumentedStore,
    SessionStore,
    Store,
    store_for,
)

log = structlog.get_logger("worker.app")


def create_app(settings: Settings, store: Store | None = None) -> Starlette:
    """The worker's HTTP app and its lifespan; ``store`` overrides the one described by
    ``settings.storage``. Its WebSockets are served by ``worker.server``, not through it."""
    metrics = WorkerMetrics()
    metrics.info.labels(settings.worker_id).set(1)
    started = time.monotonic()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raw = store if store is not None else store_for(settings.storage)
        # Leases and owner records get a lane of their own (same backend, own connections).
        lane = store if store is not None else store_for(settings.storage)
        session_store = SessionStore(
            InstrumentedStore(raw, metrics.storage_request), settings.worker_id
        )
        coordination = InstrumentedStore(lane, metrics.storage_request)
        manager = SessionManager(settings, session_store, metrics, coordination)
        state = WorkerState(settings, metrics, session_store, manager)
        app.state.worker = state
        log.info(
            "worker_started",
            worker=settings.worker_id,
            port=settings.port,
            storage=settings.storage.describe(),
            flush_interval_ms=settings.flush_interval_ms,
            advertise=settings.advertise_address,
            lease_ttl_ms=settings.lease_ttl_ms,
            incarnation=manager.lease.incarnation,
            ack_mode=settings.ack_mode,
        )
        if (warning := state.auth.startup_warning()) is not None:
            event, fields = warning
            log.warning(event, **fields)  # auth_disabled: loud, once, next to worker_started
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(manager.run)
                # Take sessions from the first request on when storage answers at once; a worker
                # whose storage is down starts anyway and reports "starting" until it does.
                await manager.lease.wait_valid(settings.lease_ttl_ms / 5000)
                tg.start_soon(metrics.watch_event_loop)
                state.ready = True
                try:
                    yield
                finally:
                    with anyio.CancelScope(shield=True):
                        state.ready = False
                        if manager.sessions:
                            await manager.handoff.drain(settings.drain_timeout_ms / 1000)
                        await manager.aclose()
                        tg.cancel_scope.cancel()
        finally:
            if store is None:
                with anyio.CancelScope(shield=True):
                    await raw.aclose()
                    await lane.aclose()
            log.info("worker_stopped", worker=settings.worker_id)

    def worker(request: Request) -> WorkerState:
        state: WorkerState = request.app.state.worker
        return state

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "worker": settings.worker_id})

    async def readyz(request: Request) -> Response:
        state = worker(request)
        manager = state.manager
        # "fenced": its storage lease ran out, so it serves nothing until storage takes a
        # renewal again; "starting" covers the time before its first lease.
        if manager.draining:
            status = "draining"
        elif manager.lease.lapsed:
            status = "fenced"
        elif not state.ready or not manager.lease.established:
            status = "starting"
        else:
            status = "ready"
        body = {
            "state": status,
            "worker": settings.worker_id,
            "incarnation": manager.lease.incarnation,
            **state.load_and_durability(),
        }
        return JSONResponse(body, status_code=200 if status == "ready" else 503)

    async def metrics_endpoint(request: Request) -> Response:
        worker(request).manager.update_lag_metrics()
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    async def index(request: Request) -> Response:
        return JSONResponse(
            {
                "service": "collab-worker",
                "worker": settings.worker_id,
                "protocols": {"json": "/ (or /ws)", "yjs": "/yjs/{session}/{path}"},
            }
        )

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        *admin_routes(settings, metrics, started),
        *peer_routes,
        *http_api_routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.metrics = metrics
    return app
