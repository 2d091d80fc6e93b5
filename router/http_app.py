"""The router's HTTP side: health, readiness, metrics and the admin API (bearer ``ADMIN_TOKEN``).

The admin API aggregates the workers' own admin endpoints (the worker is the source of truth for
its sessions and its drain state) and locates sessions on the ring.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contract.admin_token import require_admin, sending_token
from contract.ids import validate_session_id

from .membership import Membership, WorkerInfo, describe_error
from .metrics import RouterMetrics
from .proxy import Proxy
from .settings import RouterSettings

T = TypeVar("T")


def create_http_app(
    settings: RouterSettings, metrics: RouterMetrics, membership: Membership, proxy: Proxy
) -> Starlette:
    token = settings.admin_token
    sending = sending_token(token)
    auth = {"authorization": f"Bearer {sending}"} if sending else {}

    async def worker_call(
        info: WorkerInfo, method: str, path: str
    ) -> tuple[int, dict[str, Any] | None, str | None]:
        """(status, JSON body, error) of one admin call to a worker."""
        try:
            response = await proxy.http.request(
                method, f"http://{info.address}{path}", headers=auth, timeout=30
            )
            body = response.json()
            return response.status_code, body if isinstance(body, dict) else None, None
        except (httpx.HTTPError, ValueError) as exc:
            return 0, None, f"{type(exc).__name__}: {exc}"

    def not_found(name: str) -> Response:
        known = ", ".join(sorted(i.name for i in membership.workers.values())) or "none"
        return JSONResponse({"error": f"no worker named {name}; known: {known}"}, status_code=404)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "router": settings.router_id})

    async def readyz(request: Request) -> Response:
        if not proxy.accepting:
            state = "stopping"
        elif not membership.checked:
            state = "starting"
        elif not membership.ring:
            state = "no workers"
        else:
            state = "ready"
        body = {
            "state": state,
            "router": settings.router_id,
            "workers": membership.summary(),
            "connections": proxy.connections,
        }
        return JSONResponse(body, status_code=200 if state == "ready" else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    async def admin_workers(request: Request) -> Response:
        relayed: dict[str, int] = {}
        for relays in proxy.live.values():
            for relay in relays:
                relayed[relay.worker] = relayed.get(relay.worker, 0) + 1
        rows = []
        for info in sorted(membership.workers.values(), key=lambda i: i.name):
            row = info.describe()
            row["onRing"] = info.id in membership.ring and membership.ring[info.id] is info
            row["connectionsViaThisRouter"] = relayed.get(info.name, 0)
            rows.append(row)
        return JSONResponse({"router": settings.router_id, "workers": rows})

    async def worker_status(info: WorkerInfo) -> dict[str, Any]:
        """The membership view of a worker plus its own fresh ``/admin/status``."""
        row = info.describe()
        row["onRing"] = info.id is not None and membership.ring.get(info.id) is info
        if info.state == "down":
            return row
        status, body, error = await worker_call(info, "GET", "/admin/status")
        if status == 200 and body is not None:
            row["status"] = body
            # Fresher than the last health round.
            for key in ("sessions", "connections", "storage", "unflushedBytes"):
                if key in body:
                    row[key] = body[key]
            row["unflushedAgeSeconds"] = body.get("unflushedAgeSeconds")
        else:
            row["statusError"] = error or f"HTTP {status}: {body}"
        return row

    async def all_worker_status() -> list[dict[str, Any]]:
        infos = sorted(membership.workers.values(), key=lambda i: i.name)
        return await at_once(infos, worker_status)

    async def live_on(session: str) -> list[WorkerInfo]:
        """The workers that hold ``session`` live right now (normally one; two mid-hand-off)."""
        infos = [i for i in membership.workers.values() if i.state != "down"]
        path = f"/admin/sessions/{quote(session)}"
        answers = await at_once(infos, lambda info: worker_call(info, "GET", path))
        return [info for info, (status, _, _) in zip(infos, answers, strict=True) if status == 200]

    async def admin_worker(request: Request) -> Response:
        name = request.path_params["worker"]
        info = membership.find(name)
        if info is None:
            return not_found(name)
        return JSONResponse(await worker_status(info))

    async def admin_status(request: Request) -> Response:
        rows = await all_worker_status()
        commits = sorted(
            (
                {**c, "worker": row["id"]}
                for row in rows
                for c in row.get("status", {}).get("recentCommits", [])
            ),
            key=lambda c: str(c.get("at")),
            reverse=True,
        )[:10]
        live = [r for r in rows if "status" in r]
        return JSONResponse(
            {
                "router": {
                    "id": settings.router_id,
                    "ready": proxy.accepting and membership.checked and bool(membership.ring),
                    "connections": proxy.connections,
                    "sessionsRelayed": len(proxy.live),
                    "authRequired": settings.auth_secret is not None,
                },
                "workers": rows,
                "totals": {
                    "workers": membership.summary(),
                    "sessions": sum(int(r.get("sessions") or 0) for r in live),
                    "connections": sum(int(r.get("connections") or 0) for r in live),
                    "unflushedBytes": sum(int(r.get("unflushedBytes") or 0) for r in live),
                    "maxUnflushedAgeSeconds": max(
                        (float(r.get("unflushedAgeSeconds") or 0) for r in live), default=0.0
                    ),
                    "storageUnavailable": sorted(r["id"] for r in live if r.get("storage") != "ok"),
                },
                "recentCommits": commits,
            }
        )

    async def admin_metrics(request: Request) -> Response:
        """Every worker's own ``/metrics``, parsed: what autoscalers and `collab status` read."""
        infos = sorted(
            (i for i in membership.workers.values() if i.state != "down"), key=lambda i: i.name
        )

        async def one(info: WorkerInfo) -> dict[str, Any]:
            entry: dict[str, Any] = {"state": info.state, "address": info.address}
            try:
                response = await proxy.http.get(f"http://{info.address}/metrics", timeout=10)
                response.raise_for_status()
                entry["metrics"] = parse_metrics(response.text)
            except (httpx.HTTPError, ValueError) as exc:
                entry["error"] = describe_error(exc)
            return entry

        entries = await at_once(infos, one)
        result = {info.name: entry for info, entry in zip(infos, entries, strict=True)}
        return JSONResponse({"router": settings.router_id, "workers": result})

    async def admin_sessions(request: Request) -> Response:
        wanted = request.query_params.get("worker")
        infos = [i for i in membership.workers.values() if i.state != "down"]
        if wanted is not None:
            info = membership.find(wanted)
            if info is None:
                return not_found(wanted)
            infos = [info]
        sessions: list[dict[str, Any]] = []
        errors: dict[str, str] = {}
        answers = await at_once(infos, lambda info: worker_call(info, "GET", "/admin/sessions"))
        for info, (status, body, error) in zip(infos, answers, strict=True):
            if status != 200 or body is None:
                errors[info.name] = error or f"HTTP {status}: {body}"
                continue
            sessions.extend({**s, "worker": info.name} for s in body.get("sessions", []))
        sessions.sort(key=lambda s: (s.get("worker", ""), s.get("sessionId", "")))
        return JSONResponse({"sessions": sessions, "errors": errors})

    def invalid_session(session: str) -> Response | None:
        try:
            validate_session_id(session)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return None

    async def admin_locate(request: Request) -> Response:
        session = request.path_params["session"]
        if (invalid := invalid_session(session)) is not None:
            return invalid
        owner = membership.owner(session)
        holders = sorted(info.name for info in await live_on(session))
        return JSONResponse(
            {
                "sessionId": session,
                "owner": owner.name if owner else None,
                "address": owner.address if owner else None,
                "live": bool(owner and owner.name in holders),
                "liveOn": holders,
                "connectionsViaThisRouter": len(proxy.live.get(session, ())),
            }
        )

    async def admin_commit(request: Request) -> Response:
        """Commit now, on the worker where the session is live (else its owner, which loads it)."""
        session = request.path_params["session"]
        if (invalid := invalid_session(session)) is not None:
            return invalid
        holders = await live_on(session)
        target = holders[0] if holders else membership.owner(session)
        if target is None:
            return JSONResponse(
                {"error": "no worker is ready to load the session; retry shortly"},
                status_code=503,
            )
        status, body, error = await worker_call(
            target, "POST", f"/admin/sessions/{quote(session)}/commit"
        )
        if status == 0:
            return JSONResponse(
                {"error": f"worker {target.name} at {target.address} unreachable: {error}"},
                status_code=502,
            )
        return JSONResponse(body or {}, status_code=status)

    async def admin_worker_action(request: Request) -> Response:
        name, action = request.path_params["worker"], request.path_params["action"]
        if action not in ("drain", "undrain"):
            return JSONResponse({"error": f"unknown action {action!r}"}, status_code=404)
        info = membership.find(name)
        if info is None:
            return not_found(name)
        if action == "drain" and info.state == "active":
            # Off the ring here at once, so the sessions the worker sends away reconnect to
            # their new owners instead of coming back to it until the next health round.
            membership.set_state(info, "draining")
        status, body, error = await worker_call(info, "POST", f"/admin/{action}")
        if status == 0:
            return JSONResponse(
                {"error": f"worker {info.name} at {info.address} unreachable: {error}"},
                status_code=502,
            )
        # The worker's readiness now says draining/ready; act on it without waiting a round.
        await membership.refresh(proxy.http)
        return JSONResponse(body or {}, status_code=status)

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/admin/status", require_admin(token, admin_status)),
        Route("/admin/metrics", require_admin(token, admin_metrics)),
        Route("/admin/workers", require_admin(token, admin_workers)),
        Route("/admin/workers/{worker}", require_admin(token, admin_worker)),
        Route("/admin/sessions", require_admin(token, admin_sessions)),
        Route("/admin/sessions/{session}", require_admin(token, admin_locate)),
        Route(
            "/admin/sessions/{session}/commit",
            require_admin(token, admin_commit),
            methods=["POST"],
        ),
        Route(
            "/admin/workers/{worker}/{action:str}",
            require_admin(token, admin_worker_action),
            methods=["POST"],
        ),
    ]
    return Starlette(routes=routes)


async def at_once(
    infos: Sequence[WorkerInfo], call: Callable[[WorkerInfo], Awaitable[T]]
) -> list[T]:
    """``call`` for every worker concurrently; the results in the order of ``infos``."""
    results: dict[int, T] = {}

    async def one(i: int, info: WorkerInfo) -> None:
        results[i] = await call(info)

    async with anyio.create_task_group() as tg:
        for i, info in enumerate(infos):
            tg.start_soon(one, i, info)
    return [results[i] for i in range(len(infos))]


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → ``{'name{label="v"}': value}``, leaving out histogram buckets."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_created")):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
