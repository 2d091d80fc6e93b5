"""The router's own HTTP answers, against a real router and stand-in workers on real sockets.

The stand-in worker is a small Starlette app (real uvicorn on a free port) that answers the two
endpoints the router reads, so each answer here is exactly what the router made of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from router.admin_api import parse_metrics
from router.server import Router, run_router
from router.settings import RouterSettings
from tests.s3server import free_port
from tests.support import wait_until

TOKENS = "new-token,old-token"  # mid-rotation: the router must send the first
ADMIN = {"authorization": "Bearer old-token"}


@dataclass
class StandIn:
    """A worker that is ready and reports fixed figures; it records the admin calls it gets."""

    name: str
    port: int = field(default_factory=free_port)
    authorizations: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def app(self) -> Starlette:
        async def readyz(request: Request) -> Response:
            return JSONResponse({"state": "ready", "worker": self.name, "sessions": 1})

        async def status(request: Request) -> Response:
            self.authorizations.append(request.headers.get("authorization", ""))
            return JSONResponse(
                {
                    "worker": self.name,
                    "sessions": 3,
                    "connections": 5,
                    "storage": "unavailable",
                    "unflushedBytes": 70,
                    "unflushedAgeSeconds": 1.5,
                    "recentCommits": [{"sha": "abc", "at": "2026-01-01T00:00:00Z"}],
                }
            )

        return Starlette(routes=[Route("/readyz", readyz), Route("/admin/status", status)])


@asynccontextmanager
async def router_with(
    stand_ins: list[StandIn], down: int = 0, admin_token: str | None = TOKENS
) -> AsyncIterator[tuple[Router, str]]:
    """A router over ``stand_ins`` plus ``down`` addresses nobody listens on; (router, URL)."""
    servers = [
        uvicorn.Server(
            uvicorn.Config(w.app(), host="127.0.0.1", port=w.port, log_config=None, ws="none")
        )
        for w in stand_ins
    ]
    workers = [("127.0.0.1", w.port) for w in stand_ins]
    workers += [("127.0.0.1", free_port()) for _ in range(down)]
    settings = RouterSettings(
        host="127.0.0.1",
        port=free_port(),
        router_id="r-test",
        workers=tuple(workers),
        admin_token=admin_token,
        health_interval_ms=200,
    )
    async with anyio.create_task_group() as workers_tg:
        for server in servers:
            workers_tg.start_soon(server.serve)
        await wait_until(lambda: all(s.started for s in servers), what="stand-ins listening")
        try:
            async with anyio.create_task_group() as router_tg:
                router: Router = await router_tg.start(run_router, settings)
                try:
                    yield router, f"http://127.0.0.1:{router.port}"
                finally:
                    router_tg.cancel_scope.cancel()
        finally:
            for server in servers:
                server.should_exit = True


async def get(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        return await http.get(url, **kw)


async def post(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        return await http.post(url, **kw)


class TestHealth:
    async def test_readiness_says_why_it_is_not_ready_while_health_answers(self) -> None:
        """With only unreachable workers the router is alive (200) but not ready (503)."""
        async with router_with([], down=2) as (_, url):
            health = await get(url + "/healthz")
            assert (health.status_code, health.json()) == (
                200,
                {"status": "ok", "router": "r-test"},
            )
            ready = await get(url + "/readyz")
            assert ready.status_code == 503
            assert ready.json() == {
                "state": "no workers",
                "router": "r-test",
                "workers": {"active": 0, "draining": 0, "starting": 0, "down": 2},
                "connections": 0,
            }

    async def test_a_ready_worker_makes_the_router_ready(self) -> None:
        async with router_with([StandIn("w-a")]) as (_, url):
            ready = await get(url + "/readyz")
            assert ready.status_code == 200 and ready.json()["state"] == "ready"
            assert "collab_router_workers" in (await get(url + "/metrics")).text


class TestAdminStatus:
    async def test_workers_own_figures_are_merged_and_totalled(self) -> None:
        """The worker's fresh /admin/status wins over the health round's figures."""
        w = StandIn("w-a")
        async with router_with([w], down=1) as (_, url):
            answer = await get(url + "/admin/status", headers=ADMIN)
            assert answer.status_code == 200
            body = answer.json()
            assert body["router"] == {
                "id": "r-test",
                "ready": True,
                "connections": 0,
                "sessionsRelayed": 0,
                "authRequired": False,
            }
            down, live = body["workers"]  # sorted by name: the address of one never answered
            assert live["id"] == "w-a" and live["onRing"] is True
            assert (live["sessions"], live["connections"], live["unflushedBytes"]) == (3, 5, 70)
            assert live["status"]["storage"] == "unavailable"
            assert down["state"] == "down" and "status" not in down and down["onRing"] is False
            assert body["totals"] == {
                "workers": {"active": 1, "draining": 0, "starting": 0, "down": 1},
                "sessions": 3,
                "connections": 5,
                "unflushedBytes": 70,
                "maxUnflushedAgeSeconds": 1.5,
                "storageUnavailable": ["w-a"],
            }
            assert body["recentCommits"] == [
                {"sha": "abc", "at": "2026-01-01T00:00:00Z", "worker": "w-a"}
            ]
            # Mid-rotation the router accepts both tokens but presents the first one.
            assert w.authorizations == ["Bearer new-token"]

    async def test_one_worker_is_found_by_name_or_address(self) -> None:
        w = StandIn("w-a")
        async with router_with([w]) as (_, url):
            by_name = (await get(url + "/admin/workers/w-a", headers=ADMIN)).json()
            by_address = (await get(url + f"/admin/workers/{w.address}", headers=ADMIN)).json()
            assert by_name["status"]["worker"] == by_address["status"]["worker"] == "w-a"
            listed = (await get(url + "/admin/workers", headers=ADMIN)).json()
            assert listed["router"] == "r-test"
            assert [(r["id"], r["connectionsViaThisRouter"]) for r in listed["workers"]] == [
                ("w-a", 0)
            ]


class TestAdminRefusals:
    async def test_wrong_names_and_ids_are_answered_with_what_is_known(self) -> None:
        async with router_with([StandIn("w-a")]) as (_, url):
            missing = await post(url + "/admin/workers/nope/drain", headers=ADMIN)
            assert missing.status_code == 404
            assert missing.json() == {"error": "no worker named nope; known: w-a"}
            action = await post(url + "/admin/workers/w-a/reboot", headers=ADMIN)
            assert action.status_code == 404 and "unknown action 'reboot'" in action.json()["error"]
            bad = await get(url + "/admin/sessions/-starts-with-a-dash", headers=ADMIN)
            assert bad.status_code == 400 and "session id" in bad.json()["error"]
            unknown = await get(url + "/admin/sessions?worker=nope", headers=ADMIN)
            assert unknown.status_code == 404

    async def test_a_commit_with_no_worker_ready_asks_to_retry(self) -> None:
        async with router_with([], down=1) as (_, url):
            answer = await post(url + "/admin/sessions/s1/commit", headers=ADMIN)
            assert answer.status_code == 503 and "retry shortly" in answer.json()["error"]
            sessions = await get(url + "/admin/sessions", headers=ADMIN)
            assert sessions.json() == {"sessions": [], "errors": {}}

    async def test_without_a_token_the_admin_api_is_refused_not_open(self) -> None:
        async with router_with([], down=1, admin_token=None) as (_, url):
            assert (await get(url + "/admin/status")).status_code == 403
            assert (await get(url + "/healthz")).status_code == 200


class TestParseMetrics:
    def test_buckets_are_left_out_and_labels_sorted(self) -> None:
        """Autoscalers read totals and gauges; buckets would multiply the answer's size."""
        text = (
            "# TYPE lag histogram\n"
            'lag_bucket{le="0.1"} 1.0\n'
            "lag_count 1.0\n"
            "lag_sum 0.05\n"
            "# TYPE conns gauge\n"
            'conns{protocol="yjs",b="x"} 2.0\n'
        )
        assert parse_metrics(text) == {
            "lag_count": 1.0,
            "lag_sum": 0.05,
            'conns{b="x",protocol="yjs"}': 2.0,
        }
