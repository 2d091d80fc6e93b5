"""The worker's public port: WebSockets are served here, plain HTTP goes to the app.

Each new connection is greeted by the shared edge (``contract.edge``: the head read within its
size limit and deadline). A WebSocket upgrade becomes a ``Connection`` of this listener
(``worker.connection``) and is handed to its endpoint by path; anything else is relayed, as
bytes, to the Starlette app that uvicorn serves on a private Unix socket, as the router does
with its own HTTP requests. The listener also keeps what every connection shares: the tasks of
their handshakes and joins, the keep-alive pings, and the order in which they are closed when
the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import structlog

from contract.edge.greeter import Greeter
from contract.edge.http_relay import HttpRelay
from contract.edge.private_socket import PrivateSocket

from .connection import Connection
from .endpoints.json_socket import open_json
from .endpoints.refusals import deny_unknown_path
from .endpoints.worker_state import WorkerState
from .endpoints.yjs_socket import open_yjs

log = structlog.get_logger("worker.listener")

# Keep-alive as uvicorn did it: a ping every 20 s; no pong by the next one closes with 1011.
# Connections are spread over one slot per second, so pings never come in one burst.
PING_INTERVAL_S = 20
CLOSE_WAIT_S = 2.0  # at stop, for the peers' answers to our close frames


class Listener:
    def __init__(self, state: WorkerState, private: PrivateSocket) -> None:
        self.state = state
        self.private = private
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.relay = HttpRelay(private)
        self._slots: list[set[Connection]] = [set() for _ in range(PING_INTERVAL_S)]
        self._next_slot = 0
        self._tick = 0
        self._ticker: asyncio.TimerHandle | None = None
        self._all_closed: asyncio.Event | None = None  # set once none is left, when stopping

    def protocol_factory(self) -> Greeter:
        return Greeter(self)

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().call_later(1.0, self._keepalive)

    # --- WebSockets --------------------------------------------------------------------------

    def websocket(self, transport: asyncio.Transport, head: bytes, rest: bytes) -> None:
        settings = self.state.settings
        conn = Connection(
            self,
            transport,
            limit=settings.send_buffer_bytes,
            max_message_bytes=settings.max_message_bytes,
            on_overflow=self.state.metrics.slow_clients_dropped.inc,
        )
        transport.set_protocol(conn)
        self.connections.add(conn)
        if conn.start(head, rest) is None:
            return
        path = conn.path
        job: Coroutine[Any, Any, None]
        if path.startswith("/yjs/"):
            job = open_yjs(self.state, conn, path[5:])
        elif path in ("/", "/ws"):
            job = open_json(self.state, conn)
        else:
            deny_unknown_path(conn)
            return
        task = self.spawn(job)
        task.add_done_callback(lambda t: self._handshake_done(conn, t))

    def _handshake_done(self, conn: Connection, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("handshake_failed", exc_info=exc)
        conn.handshake_failed()  # only if the endpoint left it unanswered

    def spawn(self, job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def opened(self, conn: Connection) -> None:
        slot = self._next_slot
        self._next_slot = (slot + 1) % PING_INTERVAL_S
        conn.keepalive_slot = slot
        self._slots[slot].add(conn)

    def closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if conn.keepalive_slot >= 0:
            self._slots[conn.keepalive_slot].discard(conn)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    def _keepalive(self) -> None:
        self._tick = (self._tick + 1) % PING_INTERVAL_S
        for conn in list(self._slots[self._tick]):
            conn.keepalive()
        self._ticker = asyncio.get_running_loop().call_later(1.0, self._keepalive)

    def plain_http(self, transport: asyncio.Transport, data: bytes) -> None:
        self.relay.relay(transport, data)

    # --- stopping ----------------------------------------------------------------------------

    async def close(self, *, wait: bool = True) -> None:
        """Every WebSocket still open is closed (1012, after the drain sent the others away),
        handshakes in progress are answered 500 and their tasks cancelled; then, unless told
        not to ``wait``, the peers get a moment to answer our close frames (hanging up at once
        could reset the connection before they read it)."""
        if self._ticker is not None:
            self._ticker.cancel()
        for conn in list(self.connections):
            conn.shutdown()
        for task in list(self.tasks):
            task.cancel()
        if not wait:
            return
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2)
        if self.connections:
            self._all_closed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), CLOSE_WAIT_S)

    def abort(self) -> None:
        """The last step: whatever is left (peers that never answered our close) is cut."""
        for conn in list(self.connections):
            conn.abort()
        self.relay.abort()
