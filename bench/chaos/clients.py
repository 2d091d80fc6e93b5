"""The chaos workload's clients: pycrdt editors and JSON-protocol clients, each with its history.

Both reconnect on their own, as a real client would, with jittered exponential backoff (0.1 s
doubling to 2.5 s, y-websocket's own ceiling) that starts over once a connection synced:

- ``PyEditor`` is pycrdt's own ``Provider`` over httpx-ws (the README's "From Python" client).
  The Provider does not reconnect, and a closed socket only ends its receive loop, so each
  connection gets a new Provider around the same ``Doc``: the server's sync step 1 then makes
  it send whatever the server lacks (edits made offline, or lost with a killed worker).
- ``JsonClient`` speaks the seed's JSON protocol: join, then one request at a time (replies
  come in request order), each answered within ``REPLY_TIMEOUT_S`` or the connection is
  dropped. An operation left unanswered is recorded as an error and never retried: its token
  is neither required nor forbidden in the end.

Tokens are ``<{client}-{n}>`` followed by a newline, inserted only at boundaries of the
client's own view (the start, after a newline, the end), so no concurrent insert can split one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx
import websockets
from httpx_ws import WebSocketDisconnect, aconnect_ws
from pycrdt import Doc, Provider, Text
from pycrdt.websocket.websocket import HttpxWebsocket

TOKEN = re.compile(r"<[^<>\s]+>")
REPLY_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 5.0
PING_INTERVAL_S = 2.0
PING_TIMEOUT_S = 5.0
SYNC_TIMEOUT_S = 30.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.5
FINAL_READ_S = 20.0
MAX_OWN_FILES = 8  # a JSON client's own files: each is read again while settling
# JSON replies (one per request); everything else a JSON client receives is someone else's news.
_REPLIES = {"joined", "files", "fileContent", "fileOperationSuccess", "error", "pong"}


async def _first(*events: anyio.Event) -> None:
    """Returns once any of ``events`` is set."""
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)


async def set_within(event: asyncio.Event, seconds: float) -> bool:
    """Waits up to ``seconds`` for ``event``; whether it was set. (``asyncio.timeout``, not
    ``wait_for``: on Python 3.11, ``wait_for`` can swallow a cancellation that arrives as its
    awaitable completes, and a client task would then outlive the workload's stop.)"""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def _close_of(ws: Any) -> tuple[int | None, str]:
    """The close frame waiting in an httpx-ws session's queue, if any (a send that failed
    because the server had closed reports only the send's error)."""
    with anyio.move_on_after(0.5):
        for _ in range(256):
            try:
                await ws.receive()
            except WebSocketDisconnect as exc:
                return exc.code, exc.reason
            except Exception:
                break
    return None, ""


def digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def tokens_in(text: str) -> set[str]:
    return set(TOKEN.findall(text))


def boundary(text: str, rng: random.Random) -> int:
    """Where a token may go in this view: the end half of the time, else the start or just
    after a random newline."""
    if rng.random() < 0.5:
        return len(text)
    spots = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    return rng.choice(spots)


def backoff(attempt: int, rng: random.Random) -> float:
    first: float = BACKOFF_FIRST_S * 2 ** min(attempt, 16)
    return min(first, BACKOFF_MAX_S) * (0.5 + rng.random())


def http_url(ws_url: str) -> str:
    """httpx-ws takes http(s) URLs."""
    return "http" + ws_url[2:] if ws_url.startswith("ws") else ws_url


class History:
    """One client's history: a JSON line per event, flushed as written (a SIGKILLed workload
    leaves every event it saw)."""

    def __init__(self, path: Path, client: str, kind: str, session: str) -> None:
        self.client, self.kind, self.session = client, kind, session
        self._file: TextIO = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, ev: str, t: float | None = None, **fields: Any) -> None:
        line = {
            "t": time.time() if t is None else t,
            "client": self.client,
            "kind": self.kind,
            "session": self.session,
            "ev": ev,
            **fields,
        }
        self._file.write(json.dumps(line, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._file.close()


@dataclass
class Status:
    """What the coordinator needs to know to call the run settled."""

    client: str
    connected: bool
    synced: bool
    missing_own: int  # tokens this client must see but does not
    digests: dict[tuple[str, str], str] = field(default_factory=dict)  # (session, path) → sha1


@dataclass
class Final:
    files: dict[str, str | None]
    connected: bool
    synced: bool


class _Channel(HttpxWebsocket):
    """pycrdt's httpx-ws channel, remembering why its socket closed (the stock one ends the
    Provider's receive loop silently)."""

    def __init__(self, websocket: Any, path: str) -> None:
        super().__init__(websocket, path)
        self.closed = anyio.Event()
        self.code: int | None = None
        self.reason = ""

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except Exception as exc:  # WebSocketDisconnect, WebSocketNetworkError, ...
            self.code = getattr(exc, "code", None)
            self.reason = getattr(exc, "reason", "") or type(exc).__name__
            self.closed.set()
            raise StopAsyncIteration from None


class PyEditor:
    kind = "yjs-py"

    def __init__(
        self, name: str, session: str, path: str, router: str, history: History, seed: int
    ) -> None:
        self.name, self.session, self.path, self.router = name, session, path, router
        self.history = history
        self.rng = random.Random(f"{seed}/{name}")
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("content", type=Text)
        self.connected = self.synced = self.ever_synced = self.closed = False
        self.inserted: set[str] = set()
        self.count = 0

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Edit until ``stop``, stay connected until closed."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._connection())
            while not (stop.is_set() or self.closed):
                if not await set_within(stop, interval * (0.5 + self.rng.random())):
                    self.insert()

    def insert(self) -> None:
        self.count += 1
        token = f"<{self.name}-{self.count}>"
        self.text.insert(boundary(str(self.text), self.rng), token + "\n")
        self.inserted.add(token)
        self.history.write("insert", path=self.path, token=token)

    async def _connection(self) -> None:
        room = f"{self.session}/{self.path}"
        url = f"{http_url(self.router)}/yjs/{room}"
        attempt = 0
        async with httpx.AsyncClient(timeout=CONNECT_TIMEOUT_S, trust_env=False) as http:
            while not self.closed:
                code: int | None = None
                reason = ""
                ws: Any  # httpx-ws's session (its context manager is untyped)
                try:
                    async with aconnect_ws(
                        url,
                        http,
                        max_message_size_bytes=MAX_MESSAGE_BYTES,
                        keepalive_ping_interval_seconds=PING_INTERVAL_S,
                        keepalive_ping_timeout_seconds=PING_TIMEOUT_S,
                    ) as ws:
                        channel = _Channel(ws, room)
                        self.connected = True
                        self.history.write("connected", router=self.router)
                        try:
                            if await self._serve(channel):
                                attempt = 0
                        except Exception as exc:  # a send on a socket the server closed
                            if channel.code is None:
                                channel.code, channel.reason = await _close_of(ws)
                            channel.reason = channel.reason or _describe(exc)
                        code, reason = channel.code, channel.reason
                except Exception as exc:  # refused, reset, timed out, or the Provider failed
                    reason = _describe(exc)
                if self.connected:
                    self.connected = self.synced = False
                    self.history.write("disconnected", code=code, reason=reason)
                await asyncio.sleep(backoff(attempt, self.rng))
                attempt += 1

    async def _serve(self, channel: _Channel) -> bool:
        """One connection's Provider, until the socket closes; whether it synced. A connection
        that has not synced within ``SYNC_TIMEOUT_S`` is dropped (pycrdt has no watchdog;
        y-websocket drops one silent for 30 s)."""
        provider = Provider(self.doc, channel)
        async with anyio.create_task_group() as tg:
            await tg.start(provider.start)
            with anyio.move_on_after(SYNC_TIMEOUT_S):
                await _first(provider.synced, channel.closed)
            synced = provider.synced.is_set()
            if synced:
                self.synced = self.ever_synced = True
                self.history.write("synced")
                await channel.closed.wait()
            elif not channel.closed.is_set():
                channel.reason = f"not synced within {SYNC_TIMEOUT_S:g} s"
            tg.cancel_scope.cancel()
        return synced

    def status(self) -> Status:
        text = str(self.text)
        return Status(
            self.name,
            self.connected,
            self.synced,
            len(self.inserted - tokens_in(text)),
            {(self.session, self.path): digest(text)},
        )

    async def final(self) -> Final:
        return Final({self.path: str(self.text)}, self.connected, self.synced)


class _NoReply(Exception):
    """The connection gave no answer in time, or closed before answering."""


class JsonClient:
    kind = "json"

    def __init__(
        self,
        name: str,
        session: str,
        shared: list[str],
        router: str,
        history: History,
        seed: int,
    ) -> None:
        self.name, self.session, self.router = name, session, router
        self.shared = list(shared)  # editors' files of this session: appended to
        self.history = history
        self.rng = random.Random(f"{seed}/{name}")
        self.connected = self.synced = self.ever_synced = self.closed = False
        self.views: dict[str, str | None] = {}  # path → text last read (every path it touched)
        self.acked: dict[str, set[str]] = {}  # path → tokens of acknowledged operations
        self.own: list[str] = []  # files it created, acknowledged
        self.req = 0
        self.count = 0
        self._ws: Any = None
        self._attempt = 0  # connections since the last that joined: the backoff's exponent
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._lock = asyncio.Lock()

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        while not self.closed:
            code: int | None = None
            reason = ""
            try:
                async with websockets.connect(
                    self.router + "/",
                    open_timeout=CONNECT_TIMEOUT_S,
                    ping_interval=PING_INTERVAL_S,
                    ping_timeout=PING_TIMEOUT_S,
                    close_timeout=2,
                    max_size=None,
                    proxy=None,
                ) as ws:
                    async with asyncio.TaskGroup() as tg:
                        reader = tg.create_task(self._read(ws))
                        try:
                            await self._session(ws, interval, stop)
                        finally:
                            reader.cancel()
            except* websockets.ConnectionClosed as group:
                closed = group.exceptions[0]
                assert isinstance(closed, websockets.ConnectionClosed)
                if closed.rcvd is not None:
                    code, reason = closed.rcvd.code, closed.rcvd.reason
                else:
                    reason = "connection lost"
            except* Exception as group:  # refused, reset, timed out, no reply, a bad message
                reason = _describe(group.exceptions[0])
            self._ws = None
            if self.connected:
                self.connected = self.synced = False
                self.history.write("disconnected", code=code, reason=reason)
            await asyncio.sleep(backoff(self._attempt, self.rng))
            self._attempt += 1

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") in _REPLIES:
                self._replies.put_nowait(message)
        raise websockets.ConnectionClosed(ws.close_rcvd, ws.close_sent)

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            ws = self._ws
            if ws is None:
                raise _NoReply("not connected")
            while not self._replies.empty():  # an unsolicited error: not an answer to this
                self._replies.get_nowait()
            await ws.send(json.dumps(message))
            try:
                async with asyncio.timeout(REPLY_TIMEOUT_S):
                    return await self._replies.get()
            except TimeoutError:
                await ws.close(1000, "no reply in time")
                raise _NoReply(
                    f"no reply to {message['type']} in {REPLY_TIMEOUT_S:.0f} s"
                ) from None

    async def _session(self, ws: Any, interval: float, stop: asyncio.Event) -> None:
        self._ws = ws
        joined = await self._request(
            {"type": "join", "sessionId": self.session, "userId": self.name}
        )
        if joined.get("type") != "joined":
            raise _NoReply(f"join refused: {joined}")
        self.connected = True
        self.history.write("connected", router=self.router, worker=joined.get("containerId"))
        listed = await self._request({"type": "getFiles"})
        if listed.get("type") != "files":
            raise _NoReply(f"getFiles refused: {listed}")
        self.synced = self.ever_synced = True
        self.history.write("synced")
        self._attempt = 0
        while not (stop.is_set() or self.closed):
            if not await set_within(stop, interval * (0.5 + self.rng.random())):
                await self._operation()
        while not self.closed:  # settling: keep the views fresh for the coordinator
            await self.refresh()
            await asyncio.sleep(0.5)

    async def _operation(self) -> None:
        roll = self.rng.random()
        if not (self.shared or self.own) or (roll < 0.25 and len(self.own) < MAX_OWN_FILES):
            self.count += 1
            token = f"<{self.name}-{self.count}>"
            path = f"own/{self.name}-{self.count}.txt"
            await self._file_op("create", path, token + "\n", token)
            return
        # Mostly the editors' files (concurrent with them), sometimes its own ones.
        path = self.rng.choice(
            self.shared if self.shared and (roll < 0.8 or not self.own) else self.own
        )
        current = await self._get(path)
        if current is None:  # no such file yet: an update would overwrite whoever creates it
            return
        self.count += 1
        token = f"<{self.name}-{self.count}>"
        await self._file_op("update", path, current + token + "\n", token)

    async def _file_op(self, op: str, path: str, content: str, token: str) -> None:
        self.req += 1
        req = self.req
        self.views.setdefault(path, None)
        self.history.write("send", req=req, op=op, path=path, token=token)
        try:
            reply = await self._request(
                {"type": "fileOperation", "data": {"type": op, "path": path, "content": content}}
            )
        except (_NoReply, websockets.ConnectionClosed) as exc:
            self.history.write(
                "error", req=req, op=op, path=path, token=token, error=_describe(exc)
            )
            raise
        if reply.get("type") == "fileOperationSuccess":
            self.history.write("ack", req=req, op=op, path=path, token=token)
            self.acked.setdefault(path, set()).add(token)
            self.views[path] = content
            if op == "create":
                self.own.append(path)
        else:
            error = reply.get("error")
            self.history.write(
                "error",
                req=req,
                op=op,
                path=path,
                token=token,
                error=error,
                reason=reply.get("reason"),
            )

    async def _get(self, path: str) -> str | None:
        reply = await self._request({"type": "getFile", "data": {"path": path}})
        if reply.get("type") != "fileContent":
            raise _NoReply(f"getFile {path}: {reply}")
        content: str | None = reply["data"]["content"]
        self.views[path] = content
        return content

    async def refresh(self) -> None:
        for path in list(self.views):
            await self._get(path)

    def status(self) -> Status:
        missing = sum(
            len(tokens - tokens_in(self.views.get(path) or ""))
            for path, tokens in self.acked.items()
        )
        digests = {
            (self.session, path): digest(text)
            for path, text in self.views.items()
            if text is not None
        }
        return Status(self.name, self.connected, self.synced, missing, digests)

    async def final(self) -> Final:
        """Every touched file read once more (within ``FINAL_READ_S``); a client that cannot
        read them reports its last views and synced=False (so it counts as stuck)."""
        synced = self.synced
        if self.connected:
            try:
                async with asyncio.timeout(FINAL_READ_S):
                    await self.refresh()
            except Exception as exc:  # _NoReply, ConnectionClosed, TimeoutError
                self.history.write("error", error=f"final read failed: {_describe(exc)}")
                synced = False
        return Final(dict(self.views), self.connected, synced and self.synced)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)[:300]
    text = str(exc)[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
