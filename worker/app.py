"""``create_app(settings)``: the worker's HTTP app, its one lifespan, and its routes.

The handlers are module-level functions that find what they need on ``app.state`` (the
``WorkerState`` the lifespan builds), as the router's are; ``create_app`` only assembles them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import anyio
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .endpoints.admin_api import admin_routes
from .endpoints.http_api import http_api_routes
from .endpoints.peer_api import peer_routes
from .endpoints.worker_state import WorkerState, state_of
from .manager import SessionManager
from .metrics import WorkerMetrics
from .settings import Settings
from .storage import InstrumentedStore, SessionStore, Store, store_for
from .storage.conditional_writes import ConditionalWriteProof
from .stored_bytes import StoredBytes

log = structlog.get_logger("worker.app")

OpenStore = Callable[[], Store]


def create_app(settings: Settings, open_store: OpenStore | None = None) -> Starlette:
    """The worker's HTTP app; ``open_store`` makes each store it uses (by default the one
    ``settings.storage`` describes). Its WebSockets are served by ``worker.server``."""
    metrics = WorkerMetrics()
    metrics.info.labels(settings.worker_id).set(1)
    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        *admin_routes(settings.admin_token),
        *peer_routes,
        *http_api_routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.open_store = open_store or partial(store_for, settings.storage)
    app.state.started = time.monotonic()
    return app


async def _close(store: Store, role: str) -> None:
    """Closes one store; a failure is logged, and never keeps the other stores open."""
    try:
        await store.aclose()
    except Exception as exc:
        log.error("store_close_failed", store=role, error=str(exc) or type(exc).__name__)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: WorkerMetrics = app.state.metrics
    open_store: OpenStore = app.state.open_store
    stores = AsyncExitStack()  # every store opened is closed, whichever close fails
    try:
        raw = open_store()
        stores.push_async_callback(_close, raw, "sessions")
        # Leases and owner records get a lane of their own (same backend, own connections),
        # so that a burst of session writes never queues a lease renewal behind it.
        lane = open_store()
        stores.push_async_callback(_close, lane, "coordination")
        stored = StoredBytes(metrics)
        session_store = SessionStore(
            InstrumentedStore(raw, metrics.storage_request),
            settings.worker_id,
            on_written=stored.written,
        )
        # One live owner rests on conditional writes: no lease, so no session, before this
        # store has shown it honours them (worker.storage.conditional_writes).
        proof = app.state.conditional_writes = ConditionalWriteProof(
            InstrumentedStore(lane, metrics.storage_request),
            settings.worker_id,
            settings.storage.describe(),
        )
        coordination = proof.guarded
        manager = SessionManager(settings, session_store, metrics, coordination, stored)
        state = WorkerState(settings, metrics, session_store, manager, app.state.started)
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
        async with anyio.create_task_group() as tg:
            await tg.start(proof.run)
            await tg.start(manager.run)
            # Take sessions from the first request on when storage answers at once; a
            # worker whose storage is down starts anyway and reports "starting" until then.
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
        with anyio.CancelScope(shield=True):
            await stores.aclose()
        log.info("worker_stopped", worker=settings.worker_id)


async def healthz(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    return JSONResponse({"status": "ok", "worker": settings.worker_id})


async def readyz(request: Request) -> Response:
    state = state_of(request)
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
        "worker": state.settings.worker_id,
        "incarnation": manager.lease.incarnation,
        **state.load_and_durability(),
    }
    return JSONResponse(body, status_code=200 if status == "ready" else 503)


async def metrics_endpoint(request: Request) -> Response:
    state = state_of(request)
    state.manager.update_lag_metrics()
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


async def index(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    return JSONResponse(
        {
            "service": "collab-worker",
            "worker": settings.worker_id,
            "protocols": {"json": "/ (or /ws)", "yjs": "/yjs/{session}/{path}"},
        }
    )
