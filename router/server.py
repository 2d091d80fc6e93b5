"""The router's one lifecycle: membership, its HTTP app, and the public listener.

``run_router`` starts everything in one task group and reports ``started`` once the first health
round is done and the port is open; cancelling it stops accepting, sends every client away with
1012 (they reconnect through another router replica) and closes the rest.
"""

from __future__ import annotations

import asyncio

import anyio
import structlog
import uvicorn
from anyio.abc import TaskStatus

from contract.edge.http_relay import HttpRelay
from contract.edge.private_socket import PrivateSocket
from contract.server import Server

from .http_app import create_http_app
from .membership import Membership, Resolver, resolve_dns
from .metrics import RouterMetrics
from .proxy import Proxy
from .settings import RouterSettings

log = structlog.get_logger("router")


class Router:
    """What a running router exposes to tests and the CLI."""

    def __init__(
        self,
        settings: RouterSettings,
        metrics: RouterMetrics,
        membership: Membership,
        proxy: Proxy,
        port: int,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.membership = membership
        self.proxy = proxy
        self.port = port


async def run_router(
    settings: RouterSettings,
    *,
    resolve: Resolver = resolve_dns,
    task_status: TaskStatus[Router] = anyio.TASK_STATUS_IGNORED,
) -> None:
    metrics = RouterMetrics()
    membership = Membership(settings, metrics, resolve=resolve)
    private = PrivateSocket("collab-router")
    http_relay = HttpRelay(private)
    proxy = Proxy(settings, metrics, membership, http_relay)
    membership.on_change = proxy.ring_changed
    http_app = create_http_app(settings, metrics, membership, proxy)
    http_server = Server(
        uvicorn.Config(
            http_app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    http_socket = private.listen()
    http_done = anyio.Event()

    async def serve_http() -> None:
        try:
            await http_server.serve(sockets=[http_socket])
        finally:
            http_done.set()

    if not settings.admin_token:
        log.warning(
            "admin_disabled",
            consequence="admin API refused; hand-offs close clients without a worker flush",
            fix="set ADMIN_TOKEN (the same on routers and workers)",
        )
    if (warning := proxy.auth.startup_warning()) is not None:
        event, fields = warning
        log.warning(event, **fields)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(membership.run)
            tg.start_soon(serve_http)
            listener = await asyncio.get_running_loop().create_server(
                proxy.protocol_factory, settings.host, settings.port, backlog=4096
            )
            port = listener.sockets[0].getsockname()[1]
            log.info(
                "router_started",
                router=settings.router_id,
                port=port,
                workers=[i.address for i in membership.workers.values()],
                workers_dns=settings.workers_dns,
                ring=sorted(membership.ring),
            )
            task_status.started(Router(settings, metrics, membership, proxy, port))
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    listener.close()
                    await proxy.aclose()
                    http_server.should_exit = True
                    with anyio.move_on_after(3):
                        await http_done.wait()
                    http_relay.abort()
                    tg.cancel_scope.cancel()
    finally:
        http_server.release_sockets()
        http_socket.close()
        private.remove()
        log.info("router_stopped", router=settings.router_id)
