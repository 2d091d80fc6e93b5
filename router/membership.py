"""Which workers exist and which of them take sessions: static or DNS list, health, drain.

Every health round (about every second) re-resolves ``WORKERS_DNS`` if set and asks each worker
for ``/readyz`` (router/health.py: one kept-alive connection per worker). A worker is on the
ring when its last check said ``ready``; a draining or starting one is known but off the ring,
and one that did not answer is ``down``. The ring is keyed by the name each worker reports
(``WORKER_ID``), so every router agrees on it.

A failed connection from the proxy marks the worker down at once (its reconnecting clients go to
the next owner); the next good check brings it back.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from . import ring
from .health import HealthProbe, ProbeError
from .metrics import RouterMetrics
from .settings import RouterSettings

log = structlog.get_logger("router.membership")

STATES = ("active", "draining", "starting", "down")

Resolver = Callable[[str, int], Awaitable[list[tuple[str, int]]]]
OnChange = Callable[[tuple[str, ...], tuple[str, ...]], None]


async def resolve_dns(name: str, port: int) -> list[tuple[str, int]]:
    """Every address ``name`` resolves to (a headless Service or Swarm ``tasks.<service>``)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return sorted({(str(info[4][0]), port) for info in infos})


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass
class WorkerInfo:
    host: str
    port: int
    id: str | None = None  # the name it reports; None until it answered once
    state: str = "down"
    sessions: int = 0
    error: str | None = "not checked yet"
    since: float = field(default_factory=time.time)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def name(self) -> str:
        return self.id or self.address

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "address": self.address,
            "state": self.state,
            "sessions": self.sessions,
            "connections": self.detail.get("connections"),
            "since": round(self.since, 3),
            "error": self.error,
            "storage": self.detail.get("storage"),
            "unflushedBytes": self.detail.get("unflushedBytes"),
            "unflushedAgeSeconds": self.detail.get("unflushedAgeSeconds"),
        }


class Membership:
    def __init__(
        self,
        settings: RouterSettings,
        metrics: RouterMetrics,
        *,
        on_change: OnChange | None = None,
        resolve: Resolver = resolve_dns,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.on_change = on_change
        self.resolve = resolve
        self.workers: dict[tuple[str, int], WorkerInfo] = {
            addr: WorkerInfo(*addr) for addr in settings.workers
        }
        self.ring: dict[str, WorkerInfo] = {}  # worker id → info, active workers only
        self.checked = False  # one full round done
        self.probe = HealthProbe()
        self._dns_error: str | None = None

    # --- queries ---------------------------------------------------------------------------

    def owner(self, session: str) -> WorkerInfo | None:
        name = ring.owner(session, self.ring)
        return None if name is None else self.ring[name]

    def knows(self, info: WorkerInfo) -> bool:
        return self.workers.get((info.host, info.port)) is info

    def find(self, name: str) -> WorkerInfo | None:
        for info in self.workers.values():
            if name in (info.id, info.address):
                return info
        return None

    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for info in self.workers.values():
            counts[info.state] += 1
        return counts

    # --- updates ---------------------------------------------------------------------------

    def mark_down(self, info: WorkerInfo, error: str) -> None:
        """The proxy could not reach ``info``: off the ring now, not at the next round."""
        if info.state != "down":
            log.warning("worker_down", worker=info.name, address=info.address, error=error)
        info.error = error
        self.set_state(info, "down")

    def set_state(self, info: WorkerInfo, state: str) -> None:
        """A state learned outside a health round; the next round confirms or corrects it."""
        if info.state != state:
            info.state, info.since = state, time.time()
        self._rebuild()

    async def refresh(self) -> None:
        """One health round: resolve, check every worker, rebuild the ring."""
        if self.settings.workers_dns:
            await self._resolve()
        infos = list(self.workers.values())
        async with anyio.create_task_group() as tg:
            for info in infos:
                tg.start_soon(self._check, info)
        self.checked = True
        self._rebuild()

    async def _resolve(self) -> None:
        name, port = self.settings.workers_dns or "", self.settings.workers_port
        try:
            found = set(await self.resolve(name, port))
        except OSError as exc:
            # Keep the last known list: a DNS hiccup must not empty the pool.
            if self._dns_error != str(exc):
                log.error("dns_failed", name=name, error=str(exc))
            self._dns_error = str(exc)
            return
        self._dns_error = None
        for addr in found - self.workers.keys():
            self.workers[addr] = WorkerInfo(*addr)
            log.info("worker_discovered", address=self.workers[addr].address)
        for addr in self.workers.keys() - found:
            log.info("worker_gone_from_dns", worker=self.workers.pop(addr).name)

    async def _check(self, info: WorkerInfo) -> None:
        timeout = self.settings.health_timeout_ms / 1000
        try:
            status, body = await self.probe.readyz(info.host, info.port, timeout)
            said = str(body.get("state"))
            state = {"ready": "active", "draining": "draining"}.get(said, "starting")
            if status == 200 and state != "active":
                state = "starting"
            worker_id = body.get("worker")
            if not isinstance(worker_id, str) or not worker_id:
                raise ValueError("readyz body has no worker name")
            info.id = worker_id
            info.sessions = int(body.get("sessions", 0))
            info.detail = body
            error = None
        except (ProbeError, ValueError, TypeError, AttributeError) as exc:
            state, error = "down", describe_error(exc)
            info.sessions, info.detail = 0, {}  # unknown now; not the last answer's figures
        if state != info.state or (not self.checked and state != "active"):
            log.info(
                "worker_state", worker=info.name, address=info.address, state=state, error=error
            )
            info.state, info.since = state, time.time()
        info.error = error

    def _rebuild(self) -> None:
        active: dict[str, WorkerInfo] = {}
        for info in sorted(self.workers.values(), key=lambda i: i.address):
            if info.state != "active" or info.id is None:
                continue
            if info.id in active:
                log.error(
                    "duplicate_worker_id",
                    worker=info.id,
                    addresses=[active[info.id].address, info.address],
                    fix="give every worker its own WORKER_ID",
                )
                continue
            active[info.id] = info
        for state, count in self.summary().items():
            self.metrics.workers.labels(state).set(count)
        before, after = tuple(sorted(self.ring)), tuple(sorted(active))
        self.ring = active
        if before != after:
            log.info("ring_changed", workers=list(after))
            if self.on_change is not None:
                self.on_change(before, after)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Health rounds forever; ``started`` after the first round, so routing starts informed."""
        interval = self.settings.health_interval_ms / 1000
        try:
            await self.refresh()
            task_status.started()
            while True:
                await anyio.sleep(interval)
                await self.refresh()
        finally:
            self.probe.close()
