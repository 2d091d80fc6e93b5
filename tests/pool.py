"""A real pool on loopback: worker subprocesses behind a router, for routing tests.

Workers are ``python -m worker`` processes (so they can be drained, killed and restarted); the
router runs in the test's event loop (``run_router``, real sockets) so tests can read its
membership and metrics. Membership is a mutable address list behind the router's DNS seam, so
workers can be added and removed at run time like ``tasks.<service>`` answers change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from router import ring
from router.server import Router, run_router
from router.settings import RouterSettings
from tests.s3server import free_port
from tests.support import WorkerProcess, wait_until

TOKEN = "test-admin-token"


@dataclass
class Pool:
    tmp: Path
    env: dict[str, str]
    router: Router
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    addresses: list[tuple[str, int]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.router.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.router.port}"

    def owner(self, session: str) -> str | None:
        info = self.router.membership.owner(session)
        return info.name if info else None

    async def add_worker(self, name: str, *, join: bool = True) -> WorkerProcess:
        worker = await start_worker(self.tmp, self.env, name)
        self.workers[name] = worker
        if join:
            self.addresses.append(("127.0.0.1", worker.port))
            await self.wait_ring({*self.router.membership.ring, name})
        return worker

    async def wait_ring(self, names: set[str], timeout: float = 10) -> None:
        await wait_until(
            lambda: set(self.router.membership.ring) == names,
            timeout,
            f"ring {sorted(names)} (now {sorted(self.router.membership.ring)})",
        )

    async def admin(self, method: str, path: str) -> Any:
        async with httpx.AsyncClient() as http:
            r = await http.request(
                method, self.http + path, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30
            )
            r.raise_for_status()
            return r.json()

    def metric(self, name: str, **labels: str) -> float:
        value = self.router.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


def sessions_owned_by(worker: str, workers: list[str], count: int, prefix: str) -> list[str]:
    """The first ``count`` session ids ``{prefix}-{i}`` that the ring places on ``worker``."""
    found = []
    i = 0
    while len(found) < count:
        name = f"{prefix}-{i}"
        if ring.owner(name, workers) == worker:
            found.append(name)
        i += 1
    return found


async def session_on(worker: WorkerProcess, session: str) -> dict[str, Any] | None:
    """The worker's own description of a session live on it (``/admin/sessions/{id}``: users,
    unflushedBytes, ...), or None when it is not live there."""
    async with httpx.AsyncClient() as http:
        r = await http.get(
            f"{worker.http}/admin/sessions/{session}",
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
    if r.status_code == 404:
        return None
    r.raise_for_status()
    described: dict[str, Any] = r.json()
    return described


async def start_worker(tmp: Path, env: dict[str, str], name: str) -> WorkerProcess:
    worker = WorkerProcess(
        {
            "WORKER_ID": name,
            "ADMIN_TOKEN": TOKEN,
            "FLUSH_INTERVAL_MS": "100",
            "LOG_INTERVAL_MS": "200",
            "DRAIN_TIMEOUT_MS": "5000",
            "SESSION_IDLE_MS": "60000",
            # A short lease, as short health intervals: a frozen owner is taken over in ~2 s.
            "LEASE_TTL_MS": "2000",
            "COLLAB_HOST": "127.0.0.1",
            **env,
        },
        log=tmp / f"{name}.log",
    )
    await worker.start()
    return worker


@asynccontextmanager
async def pool(
    tmp: Path,
    workers: int = 3,
    env: dict[str, str] | None = None,
    *,
    health_interval_ms: int = 200,
    worker_env: dict[str, dict[str, str]] | None = None,
    **router: Any,
) -> AsyncIterator[Pool]:
    """``worker_env``: more environment for some workers, by name (e.g. one worker's storage
    through a proxy). ``Pool.addresses`` is what the router resolves each round: a test may
    replace a worker's entry (a proxy in front of it) while the pool runs."""
    env = env if env is not None else {"STORAGE_DIR": str(tmp / "storage")}
    names = [f"w-{i}" for i in range(workers)]
    extra = worker_env or {}
    starts = await asyncio.gather(
        *(start_worker(tmp, {**env, **extra.get(n, {})}, n) for n in names),
        return_exceptions=True,
    )
    started = [w for w in starts if isinstance(w, WorkerProcess)]
    if len(started) < len(starts):  # one did not start (and was killed): the others go too
        for w in started:
            w.kill()
        raise next(e for e in starts if isinstance(e, BaseException))
    addresses = [("127.0.0.1", w.port) for w in started]

    async def resolve(name: str, port: int) -> list[tuple[str, int]]:
        return list(addresses)

    settings = RouterSettings(
        host="127.0.0.1",
        port=free_port(),
        workers_dns="workers.test",
        admin_token=TOKEN,
        health_interval_ms=health_interval_ms,
        **router,
    )
    p: Pool | None = None
    try:
        async with anyio.create_task_group() as tg:
            running: Router = await tg.start(
                lambda task_status: run_router(settings, resolve=resolve, task_status=task_status)
            )
            p = Pool(tmp, env, running, dict(zip(names, started, strict=True)), addresses)
            await p.wait_ring(set(names))
            try:
                yield p
            finally:
                tg.cancel_scope.cancel()
    finally:
        # Gracefully (SIGTERM: flush, then exit), so what the pool acknowledged is in storage.
        everyone = list(p.workers.values()) if p is not None else started
        with anyio.move_on_after(30, shield=True):
            await asyncio.gather(*(w.stop() for w in everyone), return_exceptions=True)
        for w in everyone:
            w.kill()


@asynccontextmanager
async def another_router(settings: RouterSettings) -> AsyncIterator[Router]:
    """One more router (in this event loop) with its own settings, stopped on exit."""
    async with anyio.create_task_group() as tg:
        running: Router = await tg.start(
            lambda task_status: run_router(settings, task_status=task_status)
        )
        try:
            yield running
        finally:
            tg.cancel_scope.cancel()
