"""The router's HTTP side: health, readiness, metrics and the admin API (router/admin_api.py).

Served by uvicorn on a private Unix socket; plain HTTP to the public port is relayed there
(router/server.py). The handlers are module-level and read the router's live objects from
``app.state`` (router/http_state.py), so one app is built per router and nothing else is shared.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .admin_api import admin_routes
from .api_proxy import api_routes
from .http_state import HttpState, http_state, worker_auth_for
from .membership import Membership
from .metrics import RouterMetrics
from .proxy import Proxy
from .settings import RouterSettings
from .web import web_routes


def create_http_app(
    settings: RouterSettings, metrics: RouterMetrics, membership: Membership, proxy: Proxy
) -> Starlette:
    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        *admin_routes(settings.admin_token),
        *web_routes(),
        *api_routes,
    ]
    app = Starlette(routes=routes)
    app.state.router = HttpState(
        settings, metrics, membership, proxy, worker_auth_for(settings.admin_token)
    )
    return app


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "router": http_state(request).settings.router_id})


async def readyz(request: Request) -> Response:
    """503 until a health round found a ready worker, and again once the router is stopping."""
    h = http_state(request)
    if not h.proxy.accepting:
        state = "stopping"
    elif not h.membership.checked:
        state = "starting"
    elif not h.membership.ring:
        state = "no workers"
    else:
        state = "ready"
    body = {
        "state": state,
        "router": h.settings.router_id,
        "workers": h.membership.summary(),
        "connections": h.proxy.connections,
    }
    return JSONResponse(body, status_code=200 if state == "ready" else 503)


async def metrics_endpoint(request: Request) -> Response:
    return Response(http_state(request).metrics.render(), media_type="text/plain; version=0.0.4")
