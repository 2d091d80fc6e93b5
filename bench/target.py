"""A server under test: a command template, started fresh on a free loopback port, then stopped.

Templates may use `{port}`, `{tmpdir}` (a fresh directory per start), `{python}` (this
interpreter), `{bindir}` (its directory: the venv's scripts) and `{root}` (the repository); a
server whose environment uses `{s3_endpoint}`, `{s3_port}`, `{s3_access_key}`, `{s3_secret_key}`
and `{s3_secure}` gets the S3 server `bench.run` starts (SeaweedFS as its own process, or the
real MinIO named by `MINIO_TEST_ENDPOINT`), a fresh bucket per start.
Add a server without touching code with
`python -m bench.run --server '{"name": ..., "cmd": ..., "url": ..., "framing": ..., "env": {}}'`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from bench.wire import Framing

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServerSpec:
    name: str
    cmd: str
    url: str
    framing: Framing
    env: dict[str, str] = field(default_factory=dict)
    ready: str | None = None
    """An HTTP URL answering 200 once the server takes clients; None: the port accepting."""
    metrics: str | None = None
    """A Prometheus URL with ``collab_storage_requests_total``, for storage requests/s."""

    @property
    def needs_s3(self) -> bool:
        return any("{s3_" in value for value in self.env.values())

    @classmethod
    def from_json(cls, text: str) -> ServerSpec:
        data = json.loads(text)
        return cls(
            name=data["name"],
            cmd=data["cmd"],
            url=data["url"],
            framing=Framing(data.get("framing", "yws")),
            env=dict(data.get("env", {})),
            ready=data.get("ready"),
            metrics=data.get("metrics"),
        )


_WORKER = ServerSpec(
    name="collab worker",
    cmd="{bindir}/collab worker --port {port} --host 127.0.0.1",
    url="ws://127.0.0.1:{port}/yjs",
    framing=Framing.YWS,
    env={"STORAGE_DIR": "{tmpdir}/storage", "WORKSPACE_DIR": "{tmpdir}/ws", "WORKER_ID": "bench"},
    ready="http://127.0.0.1:{port}/readyz",
    metrics="http://127.0.0.1:{port}/metrics",
)

SERVERS = {
    "worker": _WORKER,
    "worker-s3": replace(
        _WORKER,
        name="collab worker on S3",
        env={
            "MINIO_ENDPOINT": "{s3_endpoint}",
            "MINIO_PORT": "{s3_port}",
            "MINIO_BUCKET": "bench-{port}",
            "MINIO_ACCESS_KEY": "{s3_access_key}",
            "MINIO_SECRET_KEY": "{s3_secret_key}",
            "MINIO_SECURE": "{s3_secure}",
            "WORKSPACE_DIR": "{tmpdir}/ws",
            "WORKER_ID": "bench",
        },
    ),
    "pycrdt": ServerSpec(
        name="pycrdt-websocket",
        cmd="{python} -m bench.servers.pycrdt_bare --port {port}",
        url="ws://127.0.0.1:{port}/yjs",
        framing=Framing.YWS,
    ),
    "pycrdt-deflate": ServerSpec(
        name="pycrdt-websocket, deflate on",
        cmd="{python} -m bench.servers.pycrdt_bare --port {port} --deflate",
        url="ws://127.0.0.1:{port}/yjs",
        framing=Framing.YWS,
    ),
    "hocuspocus": ServerSpec(
        name="hocuspocus",
        cmd="node {root}/bench/servers/hocuspocus.mjs --port {port}",
        url="ws://127.0.0.1:{port}",
        framing=Framing.HOCUSPOCUS,
    ),
}


DEFAULT_SERVERS = ("worker", "pycrdt", "hocuspocus")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Running:
    spec: ServerSpec
    pid: int
    url: str
    log: Path
    metrics: str | None = None


class StartError(RuntimeError):
    """The server did not come up; the message carries the tail of its log."""


@asynccontextmanager
async def running(
    spec: ServerSpec, start_limit_s: float = 30, extra: dict[str, str] | None = None
) -> AsyncIterator[Running]:
    """Start `spec` on a free port, wait until it takes clients, and stop it on exit; `extra`
    adds template values (the S3 server's)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="collab-bench-") as tmpdir:
        values = {
            "port": str(port),
            "tmpdir": tmpdir,
            "python": sys.executable,
            "bindir": str(Path(sys.executable).parent),
            "root": str(ROOT),
            **(extra or {}),
        }
        argv = [part.format(**values) for part in shlex.split(spec.cmd)]
        env = {**os.environ, **{k: v.format(**values) for k, v in spec.env.items()}}
        log = Path(tmpdir) / "server.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *argv, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
            )
        try:
            try:
                async with asyncio.timeout(start_limit_s):
                    await _wait_ready(port, spec.ready and spec.ready.format(**values), process)
            except (TimeoutError, StartError) as exc:
                tail = log.read_text(errors="replace")[-2000:]
                raise StartError(f"{spec.name} did not start ({exc}):\n{tail}") from None
            metrics = spec.metrics and spec.metrics.format(**values)
            yield Running(spec, process.pid, spec.url.format(**values), log, metrics)
        finally:
            await _stop(process)


async def _wait_ready(port: int, ready: str | None, process: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            if process.returncode is not None:
                raise StartError(f"exited with {process.returncode}")
            try:
                if ready is None:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    return
                if (await http.get(ready)).status_code == 200:
                    return
            except (OSError, httpx.HTTPError):
                pass
            await asyncio.sleep(0.1)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # its own session: the whole tree, nothing else
    try:
        async with asyncio.timeout(15):
            await process.wait()
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
