"""A router stopped by cancelling it (as tests and `collab up`'s in-process users do) leaves no
socket of its own registered with the event loop: a router started after it in the same loop,
whose sockets may get the same descriptor numbers, accepts connections."""

from __future__ import annotations

import anyio
import httpx

from router.server import Router, run_router
from router.settings import RouterSettings


async def started_router(tg: anyio.abc.TaskGroup) -> Router:
    # A worker nobody runs: the router serves its own /healthz whatever its workers do.
    settings = RouterSettings(
        host="127.0.0.1", port=0, workers=(("127.0.0.1", 9),), health_interval_ms=200
    )
    router: Router = await tg.start(
        lambda task_status: run_router(settings, task_status=task_status)
    )
    return router


async def test_a_router_started_after_a_cancelled_one_serves() -> None:
    for round_ in range(3):
        async with anyio.create_task_group() as tg:
            router = await started_router(tg)
            async with httpx.AsyncClient() as http:
                with anyio.fail_after(5):
                    answer = await http.get(f"http://127.0.0.1:{router.port}/healthz")
            assert answer.status_code == 200, (round_, answer.text)
            tg.cancel_scope.cancel()  # not a signal: the router's task is cancelled
