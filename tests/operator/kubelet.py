"""A stand-in kubelet: runs the worker Pods the operator creates as real `collab worker`
processes on loopback, and stops them the way a kubelet does.

It polls the emulated API server's Pods (every 0.1 s) and, for each Pod:

* new: adds its finalizer (so a delete waits for the container, as Kubernetes waits for the
  kubelet), resolves the container's env as a kubelet would (values, ``fieldRef``
  ``metadata.name`` / ``status.podIP``, ``secretKeyRef`` from the Secrets in the API), starts
  ``python -m worker`` with it, and reports ``phase: Running`` and ``podIP``. Loopback has one
  address, so each Pod gets its own port (a Pod network namespace would give it its own IP):
  ``PORT`` is the one override, plus ``WORKSPACE_DIR`` for the ``/workspace`` volume;
* deleted (``deletionTimestamp``): runs the container's preStop command (``collab self-drain``)
  with its env, then SIGTERM, waits for the exit within the grace period, removes its finalizer;
* a worker process that exits on its own is restarted (``restartPolicy: Always``).

``resolve`` is the routers' DNS: the addresses of the running Pods the worker Service selects.
"""

from __future__ import annotations

import base64
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.s3server import free_port
from tests.support import WorkerProcess

Obj = dict[str, Any]
FINALIZER = "tests.collab.dev/kubelet"
COLLAB = str(Path(sys.executable).parent / "collab")


class Kubelet:
    def __init__(self, api: str, namespace: str, tmp: Path, service: str) -> None:
        self.api = api
        self.namespace = namespace
        self.tmp = tmp
        self.service = service
        self.http = httpx.AsyncClient(base_url=api, timeout=10)
        self.pods: dict[str, Obj] = {}
        self.procs: dict[str, WorkerProcess] = {}
        self.busy: set[str] = set()  # starting or stopping
        self.stopped: list[str] = []  # in the order their processes exited after a delete
        self.evicted: set[str] = set()
        self.selector: dict[str, str] = {}
        self.max_running = 0  # most worker processes up at once
        self.shutting_down = False  # the test is over: restart nothing

    def path(self, name: str | None = None, sub: str = "") -> str:
        base = f"/api/v1/namespaces/{self.namespace}/pods"
        return base if name is None else f"{base}/{name}{sub}"

    async def run(
        self, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        async with anyio.create_task_group() as tg:
            try:
                while True:
                    await self.sync(tg)
                    await anyio.sleep(0.1)
            finally:
                with anyio.CancelScope(shield=True):
                    for proc in self.procs.values():
                        proc.kill()
                    await self.http.aclose()

    async def sync(self, tg: anyio.abc.TaskGroup) -> None:
        items = (await self.http.get(self.path())).json().get("items") or []
        self.pods = {p["metadata"]["name"]: p for p in items}
        service = await self.http.get(
            f"/api/v1/namespaces/{self.namespace}/services/{self.service}"
        )
        if service.status_code == 200:
            self.selector = service.json()["spec"]["selector"]
        for name, pod in self.pods.items():
            if name in self.busy or name in self.evicted:
                continue
            proc = self.procs.get(name)
            if pod["metadata"].get("deletionTimestamp"):
                if FINALIZER in (pod["metadata"].get("finalizers") or []):
                    self.busy.add(name)
                    tg.start_soon(self.stop, name, pod)
            elif proc is None:
                self.busy.add(name)
                tg.start_soon(self.start, name, pod)
            elif proc.proc is not None and proc.proc.poll() is not None and not self.shutting_down:
                self.busy.add(name)  # crashed: restartPolicy Always, same Pod, same port
                tg.start_soon(self.restart, name)
        running = sum(1 for p in self.procs.values() if p.proc and p.proc.poll() is None)
        self.max_running = max(self.max_running, running)

    async def env_of(self, pod: Obj, port: int) -> dict[str, str]:
        env: dict[str, str] = {}
        [container] = pod["spec"]["containers"]
        for entry in container.get("env") or []:
            source = entry.get("valueFrom") or {}
            if "value" in entry:
                env[entry["name"]] = str(entry["value"])
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                env[entry["name"]] = {"metadata.name": pod["metadata"]["name"]}.get(
                    path, "127.0.0.1"
                )
            else:
                ref = source["secretKeyRef"]
                secret = await self.http.get(
                    f"/api/v1/namespaces/{self.namespace}/secrets/{ref['name']}"
                )
                env[entry["name"]] = base64.b64decode(secret.json()["data"][ref["key"]]).decode()
        workspace = self.tmp / pod["metadata"]["name"] / "workspace"
        workspace.mkdir(parents=True, exist_ok=True)
        env.update(PORT=str(port), COLLAB_HOST="127.0.0.1", WORKSPACE_DIR=str(workspace))
        return env

    async def start(self, name: str, pod: Obj) -> None:
        try:
            await self.http.patch(
                self.path(name),
                json={"metadata": {"finalizers": [FINALIZER]}},
                headers={"content-type": "application/merge-patch+json"},
            )
            port = free_port()
            proc = WorkerProcess(await self.env_of(pod, port), port, self.tmp / f"{name}.log")
            self.procs[name] = proc
            try:
                await proc.start()
            except RuntimeError:
                if self.shutting_down:
                    return  # stopped by the test's teardown while it was starting
                raise
            await self.http.patch(
                self.path(name, "/status"),
                json={"status": {"phase": "Running", "podIP": "127.0.0.1"}},
                headers={"content-type": "application/merge-patch+json"},
            )
        finally:
            self.busy.discard(name)

    async def restart(self, name: str) -> None:
        try:
            await self.procs[name].start()
        finally:
            self.busy.discard(name)

    async def stop(self, name: str, pod: Obj) -> None:
        try:
            proc = self.procs.get(name)
            if proc is not None and proc.proc is not None and proc.proc.poll() is None:
                grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
                deadline = time.monotonic() + grace
                hook = pod["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
                assert hook[0] == "collab"
                env = {**os.environ, **await self.env_of(pod, proc.port)}
                with anyio.move_on_after(grace):
                    await anyio.run_process([COLLAB, *hook[1:]], env=env, check=False)
                proc.signal(signal.SIGTERM)
                await proc.wait(max(1.0, deadline - time.monotonic()))
            self.stopped.append(name)
            await self.http.patch(
                self.path(name),
                json={"metadata": {"finalizers": None}},
                headers={"content-type": "application/merge-patch+json"},
            )
        finally:
            self.busy.discard(name)

    async def evict(self, name: str) -> None:
        """What an eviction under node pressure looks like: the container is killed and the Pod
        is left in phase Failed (reason Evicted), not restarted."""
        self.evicted.add(name)
        self.procs[name].kill()
        await self.http.patch(
            self.path(name, "/status"),
            json={"status": {"phase": "Failed", "reason": "Evicted"}},
            headers={"content-type": "application/merge-patch+json"},
        )
        await self.http.patch(
            self.path(name),
            json={"metadata": {"finalizers": None}},
            headers={"content-type": "application/merge-patch+json"},
        )

    async def resolve(self, name: str, port: int) -> list[tuple[str, int]]:
        """The headless Service's answer: the running Pods its selector picks."""
        selector = self.selector
        found = []
        for pod_name, pod in self.pods.items():
            labels = pod["metadata"].get("labels") or {}
            proc = self.procs.get(pod_name)
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            if proc is not None and proc.proc is not None and proc.proc.poll() is None:
                found.append(("127.0.0.1", proc.port))
        return found

    def worker(self, name: str) -> WorkerProcess:
        return self.procs[name]
