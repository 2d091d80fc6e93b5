"""A whole pool on loopback under the real operator: the emulated API server, the stand-in
kubelet, a real router (in this event loop, its DNS answered by the kubelet), S3 (SeaweedFS) and
`collab operator` as a subprocess that tests can stop, kill and start again."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from router.server import Router, run_router
from router.settings import RouterSettings
from tests.operator.apiserver import ApiServer, api_server, kubeconfig
from tests.operator.kubelet import Kubelet
from tests.s3server import S3Server, free_port

NAMESPACE = "collab"
POOL = "pool"
SERVICE = "pool-workers"
TOKEN = "operator-test-admin-token"
POOLS = f"/apis/collab.dev/v1alpha1/namespaces/{NAMESPACE}/collabpools"
MERGE = {"content-type": "application/merge-patch+json"}

Obj = dict[str, Any]


def pool_manifest(router_url: str, bucket: str, s3: S3Server, **spec: Any) -> Obj:
    kwargs = s3.store_kwargs(bucket)
    return {
        "apiVersion": "collab.dev/v1alpha1",
        "kind": "CollabPool",
        "metadata": {"name": POOL, "namespace": NAMESPACE},
        "spec": {
            "image": "collab:1",
            "routerUrl": router_url,
            "serviceName": SERVICE,
            "storage": {
                "endpoint": kwargs["endpoint"],
                "port": kwargs["port"],
                "bucket": bucket,
                "secure": False,
                "accessKeySecretRef": {"name": "s3", "key": "access-key"},
                "secretKeySecretRef": {"name": "s3", "key": "secret-key"},
            },
            "adminTokenSecretRef": {"name": "auth", "key": "admin-token"},
            "env": [
                {"name": "FLUSH_INTERVAL_MS", "value": "100"},
                {"name": "DRAIN_TIMEOUT_MS", "value": "5000"},
                {"name": "SESSION_IDLE_MS", "value": "60000"},
                {"name": "LOG_INTERVAL_MS", "value": "200"},
            ],
            "preStopTimeoutSeconds": 20,
            "terminationGracePeriodSeconds": 30,
            **spec,
        },
    }


def secret(name: str, data: dict[str, str]) -> Obj:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": encoded,
    }


@dataclass
class Cluster:
    tmp: Path
    server: ApiServer
    url: str
    kubelet: Kubelet
    router: Router
    http: httpx.AsyncClient
    operators: list[subprocess.Popen[bytes]] = field(default_factory=list)
    liveness: str = ""  # the running operator's health endpoint

    @property
    def router_http(self) -> str:
        return f"http://127.0.0.1:{self.router.port}"

    @property
    def router_ws(self) -> str:
        return f"ws://127.0.0.1:{self.router.port}"

    # -- the operator process --------------------------------------------------------------

    def start_operator(self) -> subprocess.Popen[bytes]:
        n = len(self.operators)
        config = self.tmp / "kubeconfig"
        config.write_text(kubeconfig(self.url, NAMESPACE))
        env = {
            **os.environ,
            "KUBECONFIG": str(config),
            "COLLAB_ADMIN_TOKEN": TOKEN,
            "LOG_FORMAT": "json",
        }
        env.pop("COLLAB_ROUTER", None)
        self.liveness = f"http://127.0.0.1:{free_port()}/healthz"
        with open(self.tmp / f"operator-{n}.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ops.cli",
                    "operator",
                    "--namespace",
                    NAMESPACE,
                    "--interval",
                    "0.5",
                    "--liveness",
                    self.liveness,
                ],
                env=env,
                stdout=log,
                stderr=log,
            )
        self.operators.append(proc)
        return proc

    def operator_log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.tmp.glob("operator-*.log")))

    def kill_operator(self, sig: int = signal.SIGKILL) -> None:
        proc = self.operators[-1]
        proc.send_signal(sig)
        proc.wait(30)

    # -- the API ---------------------------------------------------------------------------

    async def pool(self) -> Obj:
        r = await self.http.get(f"{POOLS}/{POOL}")
        r.raise_for_status()
        body: Obj = r.json()
        return body

    async def status(self) -> Obj:
        status: Obj = (await self.pool()).get("status") or {}
        return status

    async def patch_spec(self, **spec: Any) -> None:
        r = await self.http.patch(f"{POOLS}/{POOL}", json={"spec": spec}, headers=MERGE)
        r.raise_for_status()

    async def pods(self) -> dict[str, Obj]:
        r = await self.http.get(f"/api/v1/namespaces/{NAMESPACE}/pods")
        return {p["metadata"]["name"]: p for p in r.json().get("items") or []}

    async def events(self) -> list[Obj]:
        r = await self.http.get(f"/api/v1/namespaces/{NAMESPACE}/events")
        items: list[Obj] = r.json().get("items") or []
        return items

    async def reasons(self) -> list[str]:
        return [f"{e.get('reason')}: {e.get('message')}" for e in await self.events()]

    async def wait_event(self, prefix: str, timeout: float = 15) -> None:
        """Until an Event "REASON: message" starting with ``prefix`` was posted (kopf posts
        them from a queue, a moment after the round that made them)."""
        deadline = time.monotonic() + timeout
        while not any(r.startswith(prefix) for r in await self.reasons()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Event {prefix!r}; Events: {await self.reasons()}")
            await anyio.sleep(0.2)

    async def wait_status(self, check: Callable[[Obj], bool], timeout: float, what: str) -> Obj:
        deadline = time.monotonic() + timeout
        status: Obj = {}
        while time.monotonic() < deadline:
            status = await self.status()
            if check(status):
                return status
            await anyio.sleep(0.2)
        raise TimeoutError(f"{what} not reached in {timeout} s; status: {status}")

    async def ready_workers(self) -> list[str]:
        return sorted(
            i.name for i in self.router.membership.workers.values() if i.state == "active"
        )


@asynccontextmanager
async def cluster(tmp: Path, s3: S3Server, bucket: str, **spec: Any) -> AsyncIterator[Cluster]:
    async with api_server() as (server, url), httpx.AsyncClient(base_url=url, timeout=10) as http:
        for obj in (
            secret(
                "s3",
                {
                    "access-key": s3.store_kwargs(bucket)["access_key"],
                    "secret-key": s3.store_kwargs(bucket)["secret_key"],
                },
            ),
            secret("auth", {"admin-token": TOKEN}),
        ):
            (
                await http.post(f"/api/v1/namespaces/{NAMESPACE}/secrets", json=obj)
            ).raise_for_status()
        kubelet = Kubelet(url, NAMESPACE, tmp, SERVICE)
        settings = RouterSettings(
            host="127.0.0.1",
            port=free_port(),
            workers_dns=f"{SERVICE}.{NAMESPACE}.svc.cluster.local",
            admin_token=TOKEN,
            health_interval_ms=200,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(kubelet.run)
            router: Router = await tg.start(
                lambda task_status: run_router(
                    settings, resolve=kubelet.resolve, task_status=task_status
                )
            )
            c = Cluster(tmp, server, url, kubelet, router, http)
            manifest = pool_manifest(c.router_http, bucket, s3, **spec)
            (await http.post(POOLS, json=manifest)).raise_for_status()
            c.start_operator()
            try:
                yield c
            finally:
                for proc in c.operators:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                        try:
                            proc.wait(15)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.wait()
                kubelet.shutting_down = True
                with anyio.move_on_after(30, shield=True):
                    for proc in list(kubelet.procs.values()):
                        if proc.proc is not None and proc.proc.poll() is None:
                            await proc.stop()
                tg.cancel_scope.cancel()
