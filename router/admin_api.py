"""The router's admin API (bearer ``ADMIN_TOKEN``): the pool seen through one router.

Everything about sessions, drains and commits is asked of the workers, live, through their own
admin endpoints (the worker is the source of truth); the router adds only what it alone knows:
membership, the ring and the connections it relays. So any router answers the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contract.admin_token import Endpoint, require_admin
from contract.ids import validate_session_id
from contract.routing import MISDIRECTED

from .http_state import HttpState, http_state
from .membership import WorkerInfo, describe_error

T = TypeVar("T")


def admin_routes(token: str | None) -> list[Route]:
    def guard(endpoint: Endpoint) -> Endpoint:
        return require_admin(token, endpoint)

    return [
        Route("/admin/status", guard(admin_status)),
        Route("/admin/metrics", guard(admin_metrics)),
        Route("/admin/workers", guard(admin_workers)),
        Route("/admin/workers/{worker}", guard(admin_worker)),
        Route("/admin/sessions", guard(admin_sessions)),
        Route("/admin/sessions/{session}", guard(admin_locate)),
        Route("/admin/sessions/{session}/commit", guard(admin_commit), methods=["POST"]),
        Route("/admin/workers/{worker}/{action:str}", guard(admin_worker_action), methods=["POST"]),
    ]


# --- endpoints -------------------------------------------------------------------------------


async def admin_workers(request: Request) -> Response:
    """Membership only, no call to any worker: cheap enough to poll."""
    h = http_state(request)
    relayed: dict[str, int] = {}
    for relays in h.proxy.live.values():
        for relay in relays:
            relayed[relay.worker] = relayed.get(relay.worker, 0) + 1
    rows = []
    for info in sorted(h.membership.workers.values(), key=lambda i: i.name):
        row = info.describe()
        row["onRing"] = info.id in h.membership.ring and h.membership.ring[info.id] is info
        row["connectionsViaThisRouter"] = relayed.get(info.name, 0)
        rows.append(row)
    return JSONResponse({"router": h.settings.router_id, "workers": rows})


async def admin_worker(request: Request) -> Response:
    h = http_state(request)
    name = request.path_params["worker"]
    info = h.membership.find(name)
    if info is None:
        return not_found(h, name)
    return JSONResponse(await worker_status(h, info))


async def admin_status(request: Request) -> Response:
    h = http_state(request)
    infos = sorted(h.membership.workers.values(), key=lambda i: i.name)
    rows = await at_once(infos, lambda info: worker_status(h, info))
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
    membership, proxy = h.membership, h.proxy
    return JSONResponse(
        {
            "router": {
                "id": h.settings.router_id,
                "ready": proxy.accepting and membership.checked and bool(membership.ring),
                "connections": proxy.connections,
                "sessionsRelayed": len(proxy.live),
                "authRequired": h.settings.auth_secret is not None,
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
    h = http_state(request)
    infos = sorted(
        (i for i in h.membership.workers.values() if i.state != "down"), key=lambda i: i.name
    )

    async def one(info: WorkerInfo) -> dict[str, Any]:
        entry: dict[str, Any] = {"state": info.state, "address": info.address}
        try:
            response = await h.proxy.http.get(f"http://{info.address}/metrics", timeout=10)
            response.raise_for_status()
            entry["metrics"] = parse_metrics(response.text)
        except (httpx.HTTPError, ValueError) as exc:
            entry["error"] = describe_error(exc)
        return entry

    entries = await at_once(infos, one)
    result = {info.name: entry for info, entry in zip(infos, entries, strict=True)}
    return JSONResponse({"router": h.settings.router_id, "workers": result})


async def admin_sessions(request: Request) -> Response:
    h = http_state(request)
    wanted = request.query_params.get("worker")
    infos = [i for i in h.membership.workers.values() if i.state != "down"]
    if wanted is not None:
        info = h.membership.find(wanted)
        if info is None:
            return not_found(h, wanted)
        infos = [info]
    sessions: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    answers = await at_once(infos, lambda info: worker_call(h, info, "GET", "/admin/sessions"))
    for info, (status, body, error) in zip(infos, answers, strict=True):
        if status != 200 or body is None:
            errors[info.name] = error or f"HTTP {status}: {body}"
            continue
        sessions.extend({**s, "worker": info.name} for s in body.get("sessions", []))
    sessions.sort(key=lambda s: (s.get("worker", ""), s.get("sessionId", "")))
    return JSONResponse({"sessions": sessions, "errors": errors})


async def admin_locate(request: Request) -> Response:
    h = http_state(request)
    session = request.path_params["session"]
    if (invalid := invalid_session(session)) is not None:
        return invalid
    owner = h.membership.owner(session)
    live, record = await asyncio.gather(live_on(h, session), ownership_record(h, session))
    holders = sorted(info.name for info in live)
    return JSONResponse(
        {
            "sessionId": session,
            # The ring's proposal (what a client of this router is sent to first) ...
            "owner": owner.name if owner else None,
            "address": owner.address if owner else None,
            "live": bool(owner and owner.name in holders),
            "liveOn": holders,
            "connectionsViaThisRouter": len(h.proxy.live.get(session, ())),
            # ... and the ownership record in storage, which decides (worker/ownership.py).
            **record,
        }
    )


async def ownership_record(h: HttpState, session: str) -> dict[str, Any]:
    """The session's owner record as a worker reads it from storage (the ring's owner, else
    any worker that answers): holder, its address, epoch, since, released."""
    ring = h.membership.owner(session)
    candidates = [ring] if ring is not None else []
    candidates += [i for i in h.membership.ring.values() if i is not ring]
    error = "no worker is ready to read it"
    for info in candidates:
        status, body, failure = await worker_call(
            h, info, "GET", f"/admin/sessions/{quote(session)}/ownership"
        )
        if status == 200 and body is not None:
            record = body.get("record") or {}
            return {
                "holder": record.get("holder"),
                "holderAddress": record.get("address"),
                "epoch": record.get("epoch"),
                "ownedSince": record.get("since"),
                "released": record.get("released"),
            }
        error = failure or f"{info.name} answered HTTP {status}"
    return {"holder": None, "recordError": error}


async def admin_commit(request: Request) -> Response:
    """Commit now, on the worker where the session is live (else its owner, which loads it)."""
    h = http_state(request)
    session = request.path_params["session"]
    if (invalid := invalid_session(session)) is not None:
        return invalid
    holders = await live_on(h, session)
    target = holders[0] if holders else h.membership.owner(session)
    if target is None:
        return JSONResponse(
            {"error": "no worker is ready to load the session; retry shortly"},
            status_code=503,
        )
    path = f"/admin/sessions/{quote(session)}/commit"
    status, body, error = await worker_call(h, target, "POST", path)
    holder = h.membership.find(str((body or {}).get("holder")))
    if status == MISDIRECTED and holder is not None and holder is not target:
        # Another live worker owns it (the ring proposed a different one): commit there.
        target = holder
        status, body, error = await worker_call(h, target, "POST", path)
    if status == 0:
        return unreachable(target, error)
    return JSONResponse(body or {}, status_code=status)


async def admin_worker_action(request: Request) -> Response:
    h = http_state(request)
    name, action = request.path_params["worker"], request.path_params["action"]
    if action not in ("drain", "undrain"):
        return JSONResponse({"error": f"unknown action {action!r}"}, status_code=404)
    info = h.membership.find(name)
    if info is None:
        return not_found(h, name)
    if action == "drain" and info.state == "active":
        # Off the ring here at once, so the sessions the worker sends away reconnect to
        # their new owners instead of coming back to it until the next health round.
        h.membership.set_state(info, "draining")
    status, body, error = await worker_call(h, info, "POST", f"/admin/{action}")
    if status == 0:
        return unreachable(info, error)
    # The worker's readiness now says draining/ready; act on it without waiting a round.
    await h.membership.refresh()
    return JSONResponse(body or {}, status_code=status)


# --- asking the workers ----------------------------------------------------------------------


async def worker_call(
    h: HttpState, info: WorkerInfo, method: str, path: str
) -> tuple[int, dict[str, Any] | None, str | None]:
    """(status, JSON body, error) of one admin call to a worker; status 0: no answer."""
    try:
        response = await h.proxy.http.request(
            method, f"http://{info.address}{path}", headers=h.worker_auth, timeout=30
        )
        body = response.json()
        return response.status_code, body if isinstance(body, dict) else None, None
    except (httpx.HTTPError, ValueError) as exc:
        return 0, None, f"{type(exc).__name__}: {exc}"


async def worker_status(h: HttpState, info: WorkerInfo) -> dict[str, Any]:
    """The membership view of a worker plus its own fresh ``/admin/status``."""
    row = info.describe()
    row["onRing"] = info.id is not None and h.membership.ring.get(info.id) is info
    if info.state == "down":
        return row
    status, body, error = await worker_call(h, info, "GET", "/admin/status")
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


async def live_on(h: HttpState, session: str) -> list[WorkerInfo]:
    """The workers that hold ``session`` live right now (normally one; two mid-hand-off)."""
    infos = [i for i in h.membership.workers.values() if i.state != "down"]
    path = f"/admin/sessions/{quote(session)}"
    answers = await at_once(infos, lambda info: worker_call(h, info, "GET", path))
    return [info for info, (status, _, _) in zip(infos, answers, strict=True) if status == 200]


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


# --- answers ---------------------------------------------------------------------------------


def not_found(h: HttpState, name: str) -> Response:
    known = ", ".join(sorted(i.name for i in h.membership.workers.values())) or "none"
    return JSONResponse({"error": f"no worker named {name}; known: {known}"}, status_code=404)


def unreachable(info: WorkerInfo, error: str | None) -> Response:
    return JSONResponse(
        {"error": f"worker {info.name} at {info.address} unreachable: {error}"}, status_code=502
    )


def invalid_session(session: str) -> Response | None:
    try:
        validate_session_id(session)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return None
