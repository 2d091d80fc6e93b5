"""One cluster, on namespaces or on loopback: storage, three workers, two routers, their wiring.

``open_cluster`` builds the hosts and their network, starts storage, then the workers, then the
routers, waits until each answers ``/readyz``, and yields; whatever happens after (an error, a
Ctrl-C, a SIGTERM turned into a cancellation), it tears everything down on the way out:
processes killed, storage stopped, network faults removed, namespaces and bridge deleted.

Addresses: a process reaches another through the path a fault can cut. With namespaces that is
the other host's own address; on loopback it is a ``Link`` (links.py) per path: each worker
reaches storage through its own link, each router each worker through its own, and the client
host each router through its own. The orchestrator always observes directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.s3server import free_port

from .hosts import Namespaces
from .links import Link
from .network import LoopbackNetwork, NamespaceNetwork, Network
from .services import Service, python_service
from .storage import Storage
from .topology import CLIENT, HOSTS, ROUTERS, STORAGE, WORKERS

_WORKER_PORT = 8081
_ROUTER_PORT = 8080
_READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class ClusterSettings:
    lease_ttl_ms: int = 3000
    flush_interval_ms: int = 500
    drain_timeout_ms: int = 5000


@dataclass
class Cluster:
    mode: str  # "namespaces" or "loopback"
    run_dir: Path
    admin_token: str
    network: Network
    storage: Storage
    services: dict[str, Service]
    worker_urls: dict[str, str]  # http://host:port, observed directly
    router_urls: list[str]  # ws://…, as the client host reaches them
    client_prefix: list[str]
    namespaces: Namespaces | None = None
    settings: ClusterSettings = field(default_factory=ClusterSettings)

    @property
    def workers(self) -> list[Service]:
        return [self.services[name] for name in WORKERS]

    async def ensure_running(self) -> list[str]:
        """Continue frozen processes, start stopped ones and storage; the names started."""
        started = []
        if not self.storage.running:
            await self.storage.start()
            started.append(STORAGE)
        for service in self.services.values():
            service.signal(signal.SIGCONT)
            if not service.running:
                service.start()
                started.append(service.name)
        return started

    async def wait_ready(self, timeout: float = _READY_TIMEOUT) -> None:
        await asyncio.gather(*(s.wait_ready(timeout) for s in self.services.values()))


@contextlib.asynccontextmanager
async def open_cluster(
    run_dir: Path, *, loopback: bool, seed: int, settings: ClusterSettings | None = None
) -> AsyncIterator[Cluster]:
    settings = settings or ClusterSettings()
    token = secrets.token_urlsafe(16)
    namespaces: Namespaces | None = None
    links: dict[tuple[str, str], Link] = {}
    cluster: Cluster | None = None
    storage: Storage | None = None
    try:
        if loopback:
            address = {host: "127.0.0.1" for host in HOSTS}
            prefix: dict[str, list[str]] = {host: [] for host in HOSTS}
        else:
            namespaces = await asyncio.to_thread(Namespaces.create, HOSTS)
            address = {host: namespaces.address(host) for host in HOSTS}
            prefix = {host: namespaces.exec_prefix(host) for host in HOSTS}
        storage = Storage(address[STORAGE], prefix[STORAGE], run_dir)
        ports = {
            host: free_port() if loopback else _WORKER_PORT if host in WORKERS else _ROUTER_PORT
            for host in (*WORKERS, *ROUTERS)
        }

        network: Network
        if loopback:
            loop_net = LoopbackNetwork({})
            targets = {
                **{(w, STORAGE): ("127.0.0.1", storage.port) for w in WORKERS},
                **{(r, w): ("127.0.0.1", ports[w]) for r in ROUTERS for w in WORKERS},
                **{(CLIENT, r): ("127.0.0.1", ports[r]) for r in ROUTERS},
            }
            for n, ((src, dst), target) in enumerate(targets.items()):
                links[(src, dst)] = Link(src, dst, target, free_port(), loop_net.shape_of, seed + n)
            loop_net.links = links
            await loop_net.start()
            network = loop_net

            def reach(src: str, dst: str) -> tuple[str, int]:
                return links[(src, dst)].address
        else:
            assert namespaces is not None
            network = NamespaceNetwork(namespaces, seed)

            def reach(src: str, dst: str) -> tuple[str, int]:
                return (address[dst], storage.port if dst == STORAGE else ports[dst])

        services: dict[str, Service] = {}
        for w in WORKERS:
            s3_host, s3_port = reach(w, STORAGE)
            kwargs = storage.store_kwargs()
            env = {
                "PORT": str(ports[w]),
                "WORKER_ID": w,
                "COLLAB_HOST": address[w],
                "ADVERTISE_HOST": address[w],
                "MINIO_ENDPOINT": s3_host,
                "MINIO_PORT": str(s3_port),
                "MINIO_BUCKET": kwargs["bucket"],
                "MINIO_ACCESS_KEY": kwargs["access_key"],
                "MINIO_SECRET_KEY": kwargs["secret_key"],
                "MINIO_SECURE": "false",
                "ADMIN_TOKEN": token,
                "LEASE_TTL_MS": str(settings.lease_ttl_ms),
                "FLUSH_INTERVAL_MS": str(settings.flush_interval_ms),
                "DRAIN_TIMEOUT_MS": str(settings.drain_timeout_ms),
                "WORKSPACE_DIR": str(run_dir / "workspaces" / w),
            }
            url = f"http://{address[w]}:{ports[w]}"
            services[w] = python_service(w, "worker", env, run_dir, prefix[w], f"{url}/readyz")
        for r in ROUTERS:
            env = {
                "PORT": str(ports[r]),
                "ROUTER_ID": r,
                "COLLAB_HOST": address[r],
                "WORKERS": ",".join(f"{h}:{p}" for h, p in (reach(r, w) for w in WORKERS)),
                "ADMIN_TOKEN": token,
            }
            url = f"http://{address[r]}:{ports[r]}/readyz"
            services[r] = python_service(r, "router", env, run_dir, prefix[r], url)

        cluster = Cluster(
            mode="loopback" if loopback else "namespaces",
            run_dir=run_dir,
            admin_token=token,
            network=network,
            storage=storage,
            services=services,
            worker_urls={w: f"http://{address[w]}:{ports[w]}" for w in WORKERS},
            router_urls=["ws://{}:{}".format(*reach(CLIENT, r)) for r in ROUTERS],
            client_prefix=prefix[CLIENT],
            namespaces=namespaces,
            settings=settings,
        )
        await storage.start()
        for w in WORKERS:
            services[w].start()
        await asyncio.gather(*(services[w].wait_ready(_READY_TIMEOUT) for w in WORKERS))
        for r in ROUTERS:
            services[r].start()
        await asyncio.gather(*(services[r].wait_ready(_READY_TIMEOUT) for r in ROUTERS))
        yield cluster
    finally:
        await _teardown(cluster, storage, links, namespaces)


async def _teardown(
    cluster: Cluster | None,
    storage: Storage | None,
    links: dict[tuple[str, str], Link],
    namespaces: Namespaces | None,
) -> None:
    """Everything, each step on its own: one failing does not stop the others."""
    errors: list[BaseException] = []

    def attempt(step: Any, *args: Any) -> None:
        try:
            step(*args)
        except Exception as exc:
            errors.append(exc)

    if cluster is not None:
        for service in cluster.services.values():
            attempt(service.kill_now)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(cluster.network.heal_all()), 10)
    if storage is not None:
        await asyncio.to_thread(attempt, storage.close)
    for link in links.values():
        with contextlib.suppress(Exception):
            await link.close()
    if namespaces is not None:
        await asyncio.to_thread(attempt, namespaces.destroy)
    if errors:
        raise errors[0]


def fresh_run_dir(base: Path | None = None) -> Path:
    path = Path(tempfile.mkdtemp(prefix="chaos-", dir=base))
    (path / "logs").mkdir()
    return path


def remove_run_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
