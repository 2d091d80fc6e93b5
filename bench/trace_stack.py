"""The processes a trace replay runs against: the router + worker pair, and the reference server.

Every process is a real child on a free loopback port, in a process group of its own (so a
signal reaches its whole tree and nothing else), and cannot outlive the benchmark: the worker
and router honour ``COLLAB_PARENT_PID`` (``contract.lifeline``), Node runs under
``setpriv --pdeathsig TERM`` where util-linux has it, and every context manager here stops what
it started on the way out, on failure and Ctrl-C too.

What is stored is counted by listing the store, never by asking the worker: files under the
embedded store's directory, or ListObjectsV2 on the S3 bucket (``bench.chaos.stored``'s
independent reader).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.chaos.stored import S3Config, S3Reader
from bench.target import ROOT, free_port
from contract.lifeline import child_env

NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
REFERENCE_SERVER = NODE_MODULES / "@y" / "websocket-server" / "src" / "server.js"
ADMIN_TOKEN = "bench-trace-admin"
KINDS = ("updates", "snapshots", "log")
_NOTED = {"session_unloaded", "lease_acquired", "lease_restored"}


class StackError(RuntimeError):
    """A process did not start, or did not become ready in time; carries its log's tail."""


def node_argv(*args: str) -> list[str]:
    """``node ARGS`` that dies with this process (SIGTERM) where ``setpriv`` can arrange it."""
    setpriv = shutil.which("setpriv")
    return [*([setpriv, "--pdeathsig", "TERM"] if setpriv else []), "node", *args]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    async def stop(self, sig: int = signal.SIGTERM, limit_s: float = 20) -> None:
        """``sig`` to the process group, SIGKILL after ``limit_s``; waited for either way."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            async with asyncio.timeout(limit_s):
                await process.wait()
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def _ready(
    child: Child, url: str, limit_s: float, headers: dict[str, str] | None = None, check: Any = None
) -> None:
    """Until ``url`` answers 200 (and ``check(json)`` holds); the child exiting or the time
    running out first is a StackError."""
    async with httpx.AsyncClient(timeout=2, trust_env=False) as http:
        try:
            async with asyncio.timeout(limit_s):
                while True:
                    assert child.process is not None
                    if child.process.returncode is not None:
                        raise StackError(f"{child.name} exited ({child.process.returncode})")
                    try:
                        r = await http.get(url, headers=headers)
                        if r.status_code == 200 and (check is None or check(r.json())):
                            return
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise StackError(
                f"{child.name} not ready within {limit_s:g} s:\n{child.tail()}"
            ) from None


async def _port_open(child: Child, port: int, limit_s: float) -> None:
    try:
        async with asyncio.timeout(limit_s):
            while True:
                assert child.process is not None
                if child.process.returncode is not None:
                    raise StackError(f"{child.name} exited:\n{child.tail()}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    return
                except OSError:
                    await asyncio.sleep(0.1)
    except TimeoutError:
        raise StackError(
            f"{child.name} not listening within {limit_s:g} s:\n{child.tail()}"
        ) from None


@dataclass
class Stored:
    """Bytes and objects under ``sessions/{id}/`` by kind: updates, snapshots, log, other."""

    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*KINDS, "other"), 0))
    objects: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*KINDS, "other"), 0))

    def add(self, relative: str, size: int) -> None:
        kind = relative.split("/", 1)[0]
        kind = kind if kind in KINDS and "/" in relative else "other"
        self.bytes[kind] += size
        self.objects[kind] += 1

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    @property
    def document(self) -> int:
        """What a load reads: update segments and snapshots."""
        return self.bytes["updates"] + self.bytes["snapshots"]

    def to_json(self) -> dict[str, Any]:
        return {"bytes": dict(self.bytes), "objects": dict(self.objects), "total": self.total}


@dataclass
class CollabStack:
    """``python -m router`` in front of one ``python -m worker``, on the embedded store or S3."""

    tmp: Path
    s3: dict[str, Any] | None  # S3Server.store_kwargs(bucket), or None: the embedded store
    session_idle_ms: int
    worker: Child = field(init=False)
    router: Child = field(init=False)
    worker_port: int = field(default_factory=free_port)
    router_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        env = {
            **os.environ,
            "COLLAB_HOST": "127.0.0.1",
            "LOG_FORMAT": "json",
            "ADMIN_TOKEN": ADMIN_TOKEN,
        }
        worker_env = {
            **env,
            "PORT": str(self.worker_port),
            "WORKER_ID": "trace-w",
            "WORKSPACE_DIR": str(self.tmp / "workspace"),
            "SESSION_IDLE_MS": str(self.session_idle_ms),
        }
        if self.s3 is None:
            worker_env["STORAGE_DIR"] = str(self.storage_dir)
        else:
            worker_env |= {
                "MINIO_ENDPOINT": str(self.s3["endpoint"]),
                "MINIO_PORT": str(self.s3["port"]),
                "MINIO_BUCKET": str(self.s3["bucket"]),
                "MINIO_ACCESS_KEY": str(self.s3["access_key"]),
                "MINIO_SECRET_KEY": str(self.s3["secret_key"]),
                "MINIO_SECURE": str(self.s3["secure"]).lower(),
            }
        router_env = {
            **env,
            "PORT": str(self.router_port),
            "WORKERS": f"127.0.0.1:{self.worker_port}",
            "ROUTER_ID": "trace-r",
        }
        python = sys.executable
        self.worker = Child(
            "worker", [python, "-m", "worker"], child_env(worker_env), self.tmp / "worker.log"
        )
        self.router = Child(
            "router", [python, "-m", "router"], child_env(router_env), self.tmp / "router.log"
        )

    @property
    def storage_dir(self) -> Path:
        return self.tmp / "storage"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.router_port}/yjs"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.worker_port}/metrics"

    async def start_worker(self) -> None:
        await self.worker.start()
        await _ready(self.worker, f"http://127.0.0.1:{self.worker_port}/readyz", 60)

    async def router_sees_worker(self, limit_s: float = 30) -> None:
        """Until the router has the worker on its ring (again, after a restart)."""
        await _ready(
            self.router,
            f"http://127.0.0.1:{self.router_port}/admin/workers",
            limit_s,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            check=lambda body: any(w.get("onRing") for w in body["workers"]),
        )

    async def sessions_active(self) -> float | None:
        async with httpx.AsyncClient(timeout=2, trust_env=False) as http:
            text = (await http.get(self.metrics_url)).text
        for line in text.splitlines():
            if line.startswith("collab_sessions_active"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def log_events(self) -> dict[str, int]:
        """The worker's warnings and errors, and its session unloads, by event name (over
        every incarnation: the log is appended to across the restart)."""
        counts: dict[str, int] = {}
        for line in self.worker.log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            event = str(record.get("event", "?"))
            if record.get("level") in ("warning", "error", "critical") or event in _NOTED:
                counts[event] = counts.get(event, 0) + 1
        return counts

    async def stored(self, session: str) -> Stored:
        prefix = f"sessions/{session}/"
        result = Stored()
        if self.s3 is None:
            root = self.storage_dir / "sessions" / session
            for path in sorted(root.rglob("*")):
                if path.is_file() and not path.name.startswith(".tmp-"):
                    result.add(path.relative_to(root).as_posix(), path.stat().st_size)
            return result
        config = S3Config.from_dict(self.s3)

        def listing() -> list[tuple[str, int]]:
            with S3Reader(config) as reader:
                return reader.objects(prefix)

        for key, size in await asyncio.to_thread(listing):
            result.add(key[len(prefix) :], size)
        return result


@asynccontextmanager
async def collab_stack(
    tmp: Path, s3: dict[str, Any] | None, session_idle_ms: int
) -> AsyncIterator[CollabStack]:
    stack = CollabStack(tmp, s3, session_idle_ms)
    try:
        await stack.start_worker()
        await stack.router.start()
        await stack.router_sees_worker()
        yield stack
    finally:
        await stack.router.stop()
        await stack.worker.stop()


@dataclass
class Reference:
    """``@y/websocket-server`` as published (its ``src/server.js``), documents in memory."""

    child: Child
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@asynccontextmanager
async def reference_server(tmp: Path) -> AsyncIterator[Reference]:
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
    env.pop("YPERSISTENCE", None)  # in memory, always
    child = Child("@y/websocket-server", node_argv(str(REFERENCE_SERVER)), env, tmp / "yws.log")
    try:
        await child.start()
        await _port_open(child, port, 30)
        yield Reference(child, port)
    finally:
        await child.stop()
