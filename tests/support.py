"""Real processes and sockets for tests: workers in-process or as subprocesses, and clients.

Clients here speak the wire protocols directly (JSON, and y-websocket framing with pycrdt docs);
interoperability with third-party clients is tested separately with their own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import websockets
from httpx_ws import aconnect_ws
from pycrdt import Doc, Map, Provider, Text
from pycrdt.websocket.websocket import HttpxWebsocket
from websockets.typing import Subprotocol

from contract.lifeline import child_env
from tests.s3server import free_port
from worker import yjs_protocol as yjs
from worker.app import create_app
from worker.client import Client, Payload
from worker.server import WorkerServer
from worker.settings import Settings, StorageSettings
from worker.storage import Store

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def settings_for(storage: StorageSettings, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        host="127.0.0.1",
        port=free_port(),
        worker_id="w-test",
        flush_interval_ms=100,
        session_idle_ms=60_000,
        storage=storage,
        drain_timeout_ms=5_000,
        log_interval_ms=100,
    )
    base.update(kw)
    return Settings(**base)


@dataclass
class RunningWorker:
    settings: Settings
    server: WorkerServer
    app: Any

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def manager(self) -> Any:
        return self.app.state.worker.manager


@asynccontextmanager
async def run_worker(
    settings: Settings, open_store: Callable[[], Store] | None = None
) -> AsyncIterator[RunningWorker]:
    """A real worker on a free loopback port, in this event loop (``python -m worker`` without
    its signal handling)."""
    app = create_app(settings, open_store)
    server = WorkerServer(app, settings)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("worker exited during start-up")
        if time.monotonic() > deadline:
            raise TimeoutError("worker did not start within 10 s")
        await asyncio.sleep(0.01)
    try:
        yield RunningWorker(settings, server, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


class WorkerProcess:
    """``collab worker`` (or, with ``module="router"``, a router) as a real subprocess.

    It cannot outlive the test run: a start that fails kills it, and it is sent SIGTERM should
    pytest die before stopping it (``contract.lifeline``, as ``collab up`` does, Linux; not when
    ``wrap``ped, as a wrapper may fork and be its parent instead)."""

    def __init__(
        self,
        env: dict[str, str],
        port: int | None = None,
        log: Path | None = None,
        module: str = "worker",
        wrap: Sequence[str] = (),
    ) -> None:
        self.module = module
        # A command the process runs under (e.g. a read-only mount namespace), argv prefix.
        self.argv = [*wrap, sys.executable, "-m", module]
        self.port = port or free_port()
        self.env = {**os.environ, **env, "PORT": str(self.port), "LOG_FORMAT": "json"}
        if not wrap:
            self.env = child_env(self.env)
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20) -> None:
        if self.log_path is not None:
            with open(self.log_path, "ab") as out:  # the child keeps its own copy of the fd
                self.proc = subprocess.Popen(
                    self.argv,
                    env=self.env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=out,
                )
        else:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        try:
            await self._ready(timeout)
        except BaseException:  # not ready in time, or the test was cancelled meanwhile
            self.kill()
            raise

    async def _ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {self.proc.returncode} at start")
                try:
                    r = await http.get(f"{self.http}/readyz", timeout=1)
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError("worker not ready in time")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError("worker did not exit in time")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        return await self.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class StoppedCleanly:
    """Exit codes of a ``worker_and_router`` pair after their SIGTERM."""

    worker: int | None = None
    router: int | None = None


@asynccontextmanager
async def worker_and_router(
    tmp_path: Path, worker_env: dict[str, str]
) -> AsyncIterator[tuple[WorkerProcess, WorkerProcess, StoppedCleanly]]:
    """One worker subprocess (local storage under ``tmp_path``) and a router subprocess in front
    of it, both logging JSON to ``tmp_path``; stopped with SIGTERM on exit."""
    worker = WorkerProcess(
        {"STORAGE_DIR": str(tmp_path / "storage"), "COLLAB_HOST": "127.0.0.1", **worker_env},
        log=tmp_path / "worker.log",
    )
    await worker.start()
    router = WorkerProcess(
        {"WORKERS": f"127.0.0.1:{worker.port}", "COLLAB_HOST": "127.0.0.1"},
        log=tmp_path / "router.log",
        module="router",
    )
    stopped = StoppedCleanly()
    try:
        await router.start()
        yield worker, router, stopped
    finally:
        try:
            stopped.router = await router.stop()
        finally:
            stopped.worker = await worker.stop()


class JsonClient:
    """The seed's JSON protocol over a real WebSocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, url: str, path: str = "/", subprotocols: Sequence[str] = ()
    ) -> AsyncIterator[JsonClient]:
        """``path`` may carry a query (``/?token=...``); ``subprotocols`` are offered."""
        offered = [Subprotocol(s) for s in subprotocols] or None
        async with websockets.connect(url + path, max_size=None, subprotocols=offered) as ws:
            yield cls(ws)

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, kind: str | None = None, timeout: float = 5) -> dict[str, Any]:
        """Next message (of ``kind``, keeping the others in ``inbox``)."""
        for i, m in enumerate(self.inbox):
            if kind is None or m.get("type") == kind:
                return self.inbox.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind or 'message'} within {timeout}s; got {self.inbox}")
            m = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            if kind is None or m.get("type") == kind:
                return m
            self.inbox.append(m)

    async def request(self, message: dict[str, Any], kind: str) -> dict[str, Any]:
        await self.send(message)
        return await self.recv(kind)

    async def join(self, session: str, user: str) -> dict[str, Any]:
        return await self.request({"type": "join", "sessionId": session, "userId": user}, "joined")

    async def send_op(self, **data: Any) -> None:
        """A file operation, not waiting for its answer (it comes once stored)."""
        await self.send({"type": "fileOperation", "data": data})

    async def file_op(self, **data: Any) -> dict[str, Any]:
        await self.send({"type": "fileOperation", "data": data})
        reply = await self.recv_any(("fileOperationSuccess", "error"))
        return reply

    async def recv_any(self, kinds: tuple[str, ...], timeout: float = 5) -> dict[str, Any]:
        for i, m in enumerate(self.inbox):
            if m.get("type") in kinds:
                return self.inbox.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            m = json.loads(
                await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - time.monotonic()))
            )
            if m.get("type") in kinds:
                return m
            self.inbox.append(m)

    async def get_file(self, path: str) -> str | None:
        reply = await self.request({"type": "getFile", "data": {"path": path}}, "fileContent")
        content: str | None = reply["data"]["content"]
        return content

    async def get_files(self, path: str | None = None) -> list[str]:
        message: dict[str, Any] = {"type": "getFiles"}
        if path is not None:
            message["data"] = {"path": path}
        reply = await self.request(message, "files")
        files: list[str] = reply["data"]
        return files


@dataclass
class YjsClient:
    """A minimal y-websocket peer around a pycrdt Doc (our framing, real socket)."""

    ws: Any
    doc: Doc = field(default_factory=Doc)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    received: int = 0
    close_code: int | None = None
    close_reason: str = ""

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, url: str, room: str, subprotocols: Sequence[str] = (), doc: Doc | None = None
    ) -> AsyncIterator[YjsClient]:
        """``room`` may carry a query (``S/a.txt?token=...``); ``subprotocols`` are offered;
        ``doc``: the replica to sync (a new one by default)."""
        offered = [Subprotocol(s) for s in subprotocols] or None
        async with websockets.connect(
            f"{url}/yjs/{room}", max_size=None, subprotocols=offered
        ) as ws:
            client = cls(ws) if doc is None else cls(ws, doc)
            reader = asyncio.create_task(client._read())
            with contextlib.suppress(websockets.ConnectionClosed):
                # A refused connection may be closed before our opening message goes out; the
                # reader records the close code either way.
                await client.ws.send(yjs.sync_step1(client.doc.get_state()))
            try:
                yield client
            finally:
                reader.cancel()

    @property
    def text(self) -> Text:
        return self.doc.get("content", type=Text)

    @property
    def files(self) -> Map:
        return self.doc.get("files", type=Map)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = yjs.parse(raw)
                self.received += 1
                if frame.kind != yjs.MSG_SYNC:
                    continue
                if frame.step == yjs.SYNC_STEP1:
                    await self.ws.send(yjs.sync_step2(self.doc.get_update(frame.payload)))
                else:
                    self.doc.apply_update(frame.payload)
                    if frame.step == yjs.SYNC_STEP2:
                        self.synced.set()
                    self.changed.set()
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None:
                self.close_code, self.close_reason = exc.rcvd.code, exc.rcvd.reason
        finally:
            self.changed.set()

    async def edit(self, change: Callable[[Text], None]) -> None:
        sv = self.doc.get_state()
        change(self.text)
        await self.ws.send(yjs.update_message(self.doc.get_update(sv)))

    async def insert(self, index: int, value: str) -> None:
        await self.edit(lambda t: t.insert(index, value))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or (self.ws.close_code is not None and not predicate()):
                raise TimeoutError(f"condition not met; text={str(self.text)!r}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass

    async def wait_text(self, expected: str, timeout: float = 5) -> None:
        await self.wait_for(lambda: str(self.text) == expected, timeout)


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 5, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.02)


async def eventually(
    check: Callable[[], Awaitable[T]],
    timeout: float = 5,
    what: str = "condition",
    interval: float = 0.05,
) -> T:
    """Awaits ``check()`` until it returns something truthy, and returns that (``wait_until``
    for conditions that need I/O to observe: an HTTP answer, a storage read)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = await check()
                if value:
                    return value
                await asyncio.sleep(interval)
    except TimeoutError:
        raise TimeoutError(f"{what} not reached within {timeout}s") from None


# --- in-process pieces: clients that only buffer, and editors that make real Yjs updates ------


class Editor:
    """A client-side replica of one file (``Y.Text "content"``); each edit returns its update."""

    def __init__(self) -> None:
        self.doc: Doc = Doc()
        self.text = self.doc.get("content", type=Text)

    def insert(self, index: int, value: str) -> bytes:
        before = self.doc.get_state()
        self.text.insert(index, value)
        return self.doc.get_update(before)


class BufferingClient(Client):
    """A worker-side client with no socket: what sessions and rooms send it stays buffered,
    up to ``limit`` bytes (past it the client is dropped as too slow, as a connection is)."""

    __slots__ = ("limit", "sent")

    def __init__(self, user_id: str, limit: int) -> None:
        super().__init__(user_id)
        self.limit = limit
        self.sent: list[Payload] = []

    def send(self, data: Payload) -> bool:
        if self.closing:
            return False
        if sum(len(m) for m in self.sent) + len(data) > self.limit:
            self.close(1008, "send buffer overflow: client too slow to keep up", discard=True)
            return False
        self.sent.append(data)
        return True

    def close(self, code: int, reason: str, *, discard: bool = False) -> None:
        if self.closing:
            return
        self.closing, self.close_code, self.close_reason = True, code, reason
        if discard:
            self.sent.clear()


def buffering_client(user: str = "anonymous", limit: int = 1 << 20) -> BufferingClient:
    """A worker-side client with no socket: what sessions and rooms send it stays buffered."""
    return BufferingClient(user, limit)


async def drain(client: Client) -> list[Payload]:
    """Everything queued to ``client`` so far, in order (closes it)."""
    assert isinstance(client, BufferingClient)
    client.close(1000, "drained by the test")
    return list(client.sent)


async def end_of_turn() -> None:
    """Lets what was scheduled with ``call_soon`` this turn run (a room's fan-out does)."""
    await asyncio.sleep(0)


# --- third-party clients and fixtures shared by several test modules ---------------------------


@asynccontextmanager
async def pycrdt_client(http_url: str, room: str) -> AsyncIterator[Text]:
    """pycrdt-websocket's own client: pycrdt's Provider over its HttpxWebsocket channel."""
    doc: Doc = Doc()
    text = doc.get("content", type=Text)
    async with aconnect_ws(f"{http_url}/yjs/{room}") as ws, Provider(doc, HttpxWebsocket(ws, room)):
        yield text


PNG = bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) + bytes(range(256)) * 8


def sh(cwd: Path, *args: str) -> str:
    """A command's stdout (it must succeed), e.g. ``sh(repo, "git", "log")``."""
    return subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def make_repo(root: Path, files: int = 3) -> None:
    """A git repository at ``root``: README.md, ``files`` files under src/, a binary logo.png,
    and an untracked .collaboration/ directory, in one commit on ``main``."""
    (root / "src").mkdir(parents=True)
    (root / "README.md").write_text("# demo\n")
    for i in range(files):
        (root / "src" / f"m{i}.py").write_text(f"x = {i}\n")
    (root / "logo.png").write_bytes(PNG)
    (root / ".collaboration").mkdir()
    (root / ".collaboration" / "state.json").write_text("{}")
    sh(root, "git", "init", "-q", "-b", "main")
    sh(root, "git", "add", "README.md", "src", "logo.png")
    sh(root, "git", "-c", "user.name=dev", "-c", "user.email=dev@x", "commit", "-qm", "initial")
