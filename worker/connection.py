"""One WebSocket connection, served on its own asyncio protocol with no ASGI server between.

Through uvicorn's ASGI layer every message cost an ASGI dict, a queue hop, a writer task's
wake-up and its ``asyncio.Event``, and every idle connection carried two tasks, a scope and a
queue (docs/benchmarks.md, "WebSockets on our own protocols"). Here websockets' sans-I/O
``ServerProtocol`` parses the bytes that ``data_received`` gets, each message goes straight to
its endpoint's handler, and ``send`` frames a message and writes it to the transport at once.

A connection goes through three phases:

- **handshake**: the endpoint (a task: it may claim and load the session first) decides to
  ``accept``, to accept only to close with a reason (``worker.endpoints.refusals``), or to
  answer with an HTTP response instead (``deny``: 421 to a router). Bytes that arrive meanwhile
  wait, unparsed.
- **open**: ``serve`` hands messages to a handler, in order. A handler that returns an
  awaitable (the JSON join) runs it as a task; messages that arrive meanwhile are queued and
  reading pauses until it has finished. Fan-out never waits: a client whose unsent bytes would
  pass ``limit`` is dropped with 1008.
- **closing**: after a close frame in either direction nothing more is sent; ``on_end`` runs
  once (the endpoint's clean-up: detach from the session), never while a task of the
  connection is running.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from enum import Enum
from http import HTTPStatus
from typing import Any, Protocol, cast
from urllib.parse import unquote

import structlog
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from contract import close_codes as codes
from contract.edge.heads import RepeatedHeader, single
from contract.routing import ROUTER_HEADER, SESSION_HEADER

from .client import Client, Payload

log = structlog.get_logger("worker.connection")

Handler = Callable[[Payload], Coroutine[Any, Any, None] | None]

CLOSE_TIMEOUT_S = 10.0  # after our close frame, how long the peer has to answer with its own
DISCARD_GRACE_S = 1.0  # a client dropped as too slow: how long its close frame may take
_EARLY_LIMIT = 64 * 1024  # bytes read before the handshake completes; then reading pauses
# websockets' per-connection log lines are INFO and DEBUG; errors only, as uvicorn's were.
_LOGGER = logging.getLogger("worker.websocket")
_BINARY, _TEXT, _CONT, _PONG = Opcode.BINARY, Opcode.TEXT, Opcode.CONT, Opcode.PONG


class Phase(Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"  # answered with HTTP, or the transport is gone


class Owner(Protocol):
    """What a connection needs of the listener that accepted it."""

    def spawn(self, job: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    def opened(self, conn: Connection) -> None: ...

    def closed(self, conn: Connection) -> None: ...


class Connection(Client, asyncio.Protocol):
    __slots__ = (
        "_busy",
        "_early",
        "_ended",
        "_fragment_opcode",
        "_fragments",
        "_handler",
        "_inbox",
        "_lost",
        "_on_end",
        "_owner",
        "_phase",
        "_ping",
        "_probes",
        "_reading",
        "_response",
        "_stopped",
        "_timer",
        "_write_paused",
        "keepalive_slot",
        "limit",
        "on_overflow",
        "request",
        "routed_by",
        "routed_session",
        "transport",
        "ws",
    )

    def __init__(
        self,
        owner: Owner,
        transport: asyncio.Transport,
        *,
        limit: int,
        max_message_bytes: int,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._owner = owner
        self.transport = transport
        self.limit = limit
        self.on_overflow = on_overflow
        self.ws = ServerProtocol(max_size=max_message_bytes, logger=_LOGGER)
        self.request: Request | None = None  # the upgrade request, during the handshake
        self._response: Response | None = None  # the 101 it will be answered with
        # What a router said in its internal headers (contract.routing): its id, and on the
        # JSON protocol the session it read from the join.
        self.routed_by: str | None = None
        self.routed_session: str | None = None
        self._phase = Phase.HANDSHAKE
        self._early = bytearray()
        self._handler: Handler | None = None
        self._on_end: Callable[[], None] | None = None
        self._inbox: deque[Payload] | None = None
        self._fragments: list[bytes] | None = None
        self._fragment_opcode = _BINARY
        self._busy = False
        self._stopped = False  # we closed: later messages are not handled
        self._lost = False
        self._ended = False
        self._reading = True
        self._write_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._ping: bytes | None = None
        self._probes: dict[bytes, asyncio.Future[bool]] | None = None  # see ``alive``
        self.keepalive_slot = -1

    # --- handshake ---------------------------------------------------------------------------

    def start(self, head: bytes, rest: bytes) -> Request | None:
        """Parses the upgrade request ``head`` (``rest``: what followed it); None when it is
        not a valid WebSocket handshake and was answered already (400, 405, ...)."""
        ws = self.ws
        ws.receive_data(head)
        events = ws.events_received()
        request = events[0] if events else None
        if not isinstance(request, Request):
            self._flush()
            self._give_up()
            return None
        response = ws.accept(request)
        if response.status_code != 101:
            ws.send_response(response)
            self._flush()
            self._give_up()
            return None
        try:
            self.routed_by = single(request.headers, ROUTER_HEADER)
            self.routed_session = single(request.headers, SESSION_HEADER)
        except RepeatedHeader as exc:
            self.deny(HTTPStatus.BAD_REQUEST, [], str(exc))
            return None
        self.request = request
        self._response = response
        self._early += rest
        return request

    @property
    def path(self) -> str:
        """The request's path, percent-decoded, without its query."""
        assert self.request is not None
        return unquote(self.request.path.partition("?")[0])

    @property
    def query(self) -> str:
        assert self.request is not None
        return self.request.path.partition("?")[2]

    @property
    def subprotocols(self) -> list[str]:
        """Every subprotocol the client offers (the header may be repeated, or a list)."""
        assert self.request is not None
        return [
            token.strip()
            for value in self.request.headers.get_all("Sec-WebSocket-Protocol")
            for token in value.split(",")
            if token.strip()
        ]

    def accept(self, subprotocol: str | None = None, first: Sequence[bytes] = ()) -> bool:
        """Completes the handshake (selecting ``subprotocol``); False if the peer is gone.

        ``first``: binary messages to send right after the 101, in the same write (a
        y-websocket server's opening sync step 1 and awareness): a write is a system call,
        and on loopback the kernel delivers the data to the peer inside it."""
        response = self._response
        if self.closing or response is None or self._phase is not Phase.HANDSHAKE:
            return False
        if subprotocol:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
        ws = self.ws
        ws.send_response(response)
        for message in first:
            ws.send_binary(message)
        self._response = self.request = None
        self._phase = Phase.OPEN
        self._flush()
        self._owner.opened(self)
        return True

    def deny(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        """Answers the handshake with an HTTP response instead of accepting it."""
        if self.closing or self._phase is not Phase.HANDSHAKE:
            return
        data = body.encode()
        response = Response(
            status,
            HTTPStatus(status).phrase,
            Headers(
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(data))),
                    *headers,
                    ("Connection", "close"),
                ]
            ),
            data,
        )
        self.ws.send_response(response)
        self._flush()
        self._give_up()

    def handshake_failed(self) -> None:
        """The endpoint ended without an answer (a bug, logged by the listener): 500."""
        if not self.closing and self._phase is Phase.HANDSHAKE:
            self.ws.send_response(self.ws.reject(500, "Internal Server Error\n"))
            self._flush()
            self._give_up()

    def serve(self, handler: Handler, on_end: Callable[[], None] | None = None) -> None:
        """Hands every message to ``handler`` from now on, those already read first."""
        self._handler = handler
        self._on_end = on_end
        if self._ended:
            self._end()
            return
        early, self._early = bytes(self._early), bytearray()
        self._update_reading()
        if early:
            self.data_received(early)
        elif self._inbox:
            self._drain_inbox()

    def _give_up(self) -> None:
        """No WebSocket here (the handshake was answered with HTTP): close once it is sent."""
        self._phase = Phase.CLOSED
        self.closing = True
        self._early.clear()
        self.request = self._response = None
        if not self.transport.is_closing():
            self.transport.close()

    # --- asyncio.Protocol --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase is not Phase.OPEN:
            if phase is Phase.HANDSHAKE:
                self._early += data
                if len(self._early) > _EARLY_LIMIT:
                    self._update_reading()
            return
        if self._handler is None and not self.closing:
            self._early += data  # accepted, but the endpoint has not started serving yet
            return
        ws = self.ws
        ws.receive_data(data)
        events = ws.events_received()
        if ws.state is not OPEN:
            # The peer's close frame (echoed below) or a broken frame (a close frame of ours
            # is queued: 1002, 1007, 1009): what came before it is still handled, nothing is
            # sent after it.
            self.closing = True
        for frame in events:
            self._frame(cast(Frame, frame))  # after the handshake, websockets yields frames
        self._flush()
        if ws.state is not OPEN and not self._stopped:
            self._stopped = True
            self._inbox = None
            self._end()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.closing = True
        self._phase = Phase.CLOSED
        if self._probes:
            for probe in self._probes.values():
                if not probe.done():
                    probe.set_result(False)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._owner.closed(self)
        self._end()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # --- messages in -------------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is _BINARY or opcode is _TEXT:
            if frame.fin:
                self._message(opcode, frame.data)
            else:
                self._fragment_opcode = opcode
                self._fragments = [bytes(frame.data)]
        elif opcode is _CONT:
            fragments = self._fragments
            if fragments is None:
                return  # websockets refuses it first (1002)
            fragments.append(bytes(frame.data))
            if frame.fin:
                self._fragments = None
                self._message(self._fragment_opcode, b"".join(fragments))
        elif opcode is _PONG:
            payload = bytes(frame.data)
            if self._ping is not None and payload == self._ping:
                self._ping = None
            if self._probes is not None and (probe := self._probes.pop(payload, None)):
                if not probe.done():
                    probe.set_result(True)
        # PING: websockets queued the pong; CLOSE: the state says it (data_received).

    def _message(self, opcode: Opcode, data: bytes | bytearray | memoryview) -> None:
        if self._stopped:
            return
        payload: Payload
        if opcode is _TEXT:
            try:
                payload = bytes(data).decode()
            except UnicodeDecodeError as exc:
                self._fail(codes.INVALID_DATA, f"invalid UTF-8 in a text message: {exc.reason}")
                return
        else:
            payload = data if type(data) is bytes else bytes(data)
        if self._busy or self._inbox:
            self._queue(payload)
            return
        self._handle(payload)

    def _queue(self, payload: Payload) -> None:
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(payload)

    def _handle(self, payload: Payload) -> None:
        handler = self._handler
        assert handler is not None
        try:
            step = handler(payload)
        except Exception:
            # A bug must cost this connection, never the others.
            log.exception("connection_handler_failed")
            self.close(codes.INTERNAL_ERROR, "internal error")
            return
        if step is not None:
            self._busy = True
            self._update_reading()
            task = self._owner.spawn(step)
            task.add_done_callback(self._step_done)

    def _step_done(self, task: asyncio.Task[None]) -> None:
        self._busy = False
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("connection_handler_failed", exc_info=exc)
            self.close(codes.INTERNAL_ERROR, "internal error")
        self._drain_inbox()
        if self._ended and not self._busy:
            self._end()
        self._update_reading()

    def _drain_inbox(self) -> None:
        inbox = self._inbox
        while inbox and not self._busy and not self._stopped:
            self._handle(inbox.popleft())
        if not inbox:
            self._inbox = None

    def _update_reading(self) -> None:
        if self._lost or self.transport.is_closing():
            return
        if self._phase is Phase.HANDSHAKE or self._handler is None:
            want = len(self._early) <= _EARLY_LIMIT
        elif self.closing:
            want = True  # for the peer's close frame
        else:
            want = not self._busy and not self._write_paused
        if want != self._reading:
            self._reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    # --- messages out ------------------------------------------------------------------------

    def send(self, data: Payload) -> bool:
        if self.closing or self._phase is not Phase.OPEN:
            return False
        transport = self.transport
        if self._write_paused and transport.get_write_buffer_size() + len(data) > self.limit:
            if self.on_overflow is not None:
                self.on_overflow()
            self.close(
                codes.POLICY, "send buffer overflow: client too slow to keep up", discard=True
            )
            return False
        ws = self.ws
        if type(data) is bytes:
            ws.send_binary(data)
        else:
            ws.send_text(cast(str, data).encode())
        for chunk in ws.data_to_send():
            transport.write(chunk)
        return True

    def close(self, code: int, reason: str, *, discard: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        self.close_reason = reason
        self._stopped = True
        self._inbox = None
        if self._phase is not Phase.OPEN:
            self._end()
            return
        self.ws.send_close(code, codes.fit_reason(reason))
        self._flush()
        loop = asyncio.get_running_loop()
        if discard:
            # Too slow to keep up: what it has not read yet may never go; the close frame
            # gets a short grace, then the socket and its buffer are dropped.
            self.transport.close()
            self._timer = loop.call_later(DISCARD_GRACE_S, self.transport.abort)
        else:
            self._timer = loop.call_later(CLOSE_TIMEOUT_S, self.transport.abort)
            self._update_reading()
        self._end()

    def _fail(self, code: int, reason: str) -> None:
        """Fails the connection (RFC 6455 §7.1.7): close frame, then hang up at once."""
        self.closing = True
        self._stopped = True
        self._inbox = None
        if self.ws.state is OPEN:
            self.ws.fail(code, reason)
            self._flush()
        if not self.transport.is_closing():
            self.transport.close()
        self._end()

    async def alive(self, within_s: float) -> bool:
        """A ping of its own that the peer must answer within ``within_s``: False when it
        does not (a half-open connection, a frozen client), or when the connection ends."""
        if self.closing or self._phase is not Phase.OPEN:
            return False
        payload = os.urandom(8)
        probe: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._probes is None:
            self._probes = {}
        self._probes[payload] = probe
        self.ws.send_ping(payload)
        self._flush()
        try:
            async with asyncio.timeout(within_s):
                return await probe
        except TimeoutError:
            return False
        finally:
            if self._probes is not None:
                self._probes.pop(payload, None)

    def keepalive(self) -> None:
        """A ping per keep-alive interval; a peer that did not answer the last one (while we
        were reading) is closed with 1011, as uvicorn did."""
        if self.closing or self._phase is not Phase.OPEN:
            return
        if self._ping is not None and self._reading:
            self._ping = None
            self._fail(codes.INTERNAL_ERROR, "keepalive ping timeout")
            return
        self._ping = os.urandom(4)
        self.ws.send_ping(self._ping)
        self._flush()

    def _flush(self) -> None:
        """Writes what the sans-I/O protocol has queued, in one write; its end-of-stream (an
        empty chunk, always the last) closes the socket."""
        chunks = self.ws.data_to_send()
        if not chunks:
            return
        transport = self.transport
        data = [chunk for chunk in chunks if chunk]
        if len(data) == 1:
            transport.write(data[0])
        elif data:
            transport.write(b"".join(data))
        if len(data) < len(chunks) and not transport.is_closing():
            transport.close()  # a server closes the TCP connection after the closing handshake

    def shutdown(self) -> None:
        """The worker stops (after its drain): 1012 for an open connection, 500 for one still
        in its handshake, as uvicorn answered them."""
        if self._phase is Phase.HANDSHAKE:
            self.handshake_failed()
        else:
            self.close(codes.RESTART, "")

    def abort(self) -> None:
        self.closing = True
        self.transport.abort()

    # --- the end -----------------------------------------------------------------------------

    def _end(self) -> None:
        """Runs ``on_end`` once the connection is over for its endpoint: at the end of this
        event-loop turn (a close may come from inside a fan-out loop over the room it leaves)
        and never during a task of the connection (a join that completes after the peer left
        detaches afterwards)."""
        self._ended = True
        if self._busy or self._on_end is None:
            return
        on_end, self._on_end = self._on_end, None
        self._handler = None
        asyncio.get_running_loop().call_soon(on_end)
