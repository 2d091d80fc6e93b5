"""One load-generator client: a real y-websocket (or Hocuspocus) peer, and what it measured.

WebSockets are driven through the `websockets` library's sans-I/O protocol on a plain asyncio
protocol: a task and a future per received message would cost more CPU than the server spends
on it, and the load generator shares the machine with the server it measures.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import cast

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from bench.stats import Histogram
from bench.wire import MARKER, Codec, Kind


@dataclass
class Counters:
    """What this process measured; merged across processes by the runner."""

    start_ns: int = 0
    end_ns: int = 0
    sent: int = 0
    skipped: int = 0
    delivered_window: int = 0
    delivered_total: int = 0
    latency_us: Histogram = field(default_factory=Histogram)
    open_us: Histogram = field(default_factory=Histogram)
    synced_us: Histogram = field(default_factory=Histogram)
    connected: int = 0
    failed: int = 0
    closed_early: int = 0
    deflated: int = 0  # connections on which the server accepted permessage-deflate
    # WebSocket data messages (not control frames) sent / received by clients of this process
    # with a send / receive time inside [start_ns, end_ns]: what a proxy relays in the window.
    messages_sent: int = 0
    messages_received: int = 0
    errors: list[str] = field(default_factory=list)

    def in_window(self, now: int) -> bool:
        return self.start_ns <= now <= self.end_ns

    def deliver(self, now: int, sent_ns: int) -> None:
        if now < self.start_ns:
            return
        self.delivered_total += 1
        if now <= self.end_ns:
            self.delivered_window += 1
            self.latency_us.add((now - sent_ns) / 1000)


class Client(asyncio.Protocol):
    """One WebSocket, one document: the sans-I/O websockets protocol on an asyncio transport."""

    def __init__(
        self,
        codec: Codec,
        url: str,
        *,
        writer: bool,
        counters: Counters,
        local: dict[bytes, Client],
        deflate: bool = True,
    ) -> None:
        loop = asyncio.get_running_loop()
        extensions = enable_client_permessage_deflate(None) if deflate else None
        self.ws = ClientProtocol(parse_uri(url), extensions=extensions, max_size=64 * 2**20)
        self.codec = codec
        self.counters = counters
        self.client_id = random.getrandbits(32)
        self.own = b"%08x" % self.client_id if writer else None
        self.writer = writer
        self.local = local  # writers of this process, by marker id: whose acks we carry
        if self.own is not None:
            local[self.own] = self
        self.transport: asyncio.Transport | None = None
        self.started_ns = time.monotonic_ns()
        self.synced: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.writable = asyncio.Event()
        self.writable.set()
        self.progress = asyncio.Event()
        self.echoes_seen = 0
        self.next_seq = 0
        self.acked = 0  # updates of ours some client here has received (they arrive in order)
        self.awareness_clock = 0
        self._fragments: list[bytes] = []

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        now = time.monotonic_ns()
        for event in self.ws.events_received():
            if isinstance(event, Frame):
                self._frame(event, now)
            elif isinstance(event, Response):
                self._opened(now)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws.receive_eof()
        if not self.synced.done():
            self.synced.set_exception(ConnectionError(f"lost before sync: {exc or 'closed'}"))
        if not self.lost.done():
            self.lost.set_result(None)
        self.writable.set()
        self.progress.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # WebSocket and Yjs

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def send(self, message: bytes) -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_binary(message)
            self._flush()
            if self.counters.in_window(time.monotonic_ns()):
                self.counters.messages_sent += 1

    def _opened(self, now: int) -> None:
        if self.ws.state is not State.OPEN:
            error = self.ws.handshake_exc or ConnectionError("handshake failed")
            if not self.synced.done():
                self.synced.set_exception(error)
            return
        self.counters.open_us.add((now - self.started_ns) / 1000)
        if self.ws.extensions:
            self.counters.deflated += 1
        for message in self.codec.hello():
            self.send(message)

    def _frame(self, frame: Frame, now: int) -> None:
        if frame.opcode is Opcode.BINARY or frame.opcode is Opcode.CONT:
            if not frame.fin or self._fragments:
                self._fragments.append(bytes(frame.data))
                if not frame.fin:
                    return
                data, self._fragments = b"".join(self._fragments), []
            else:
                data = bytes(frame.data)
            if self.counters.in_window(now):
                self.counters.messages_received += 1
            self._message(data, now)

    def _message(self, message: bytes, now: int) -> None:
        kind = self.codec.classify(message)
        if kind is Kind.UPDATE:
            for sent, writer, seq in MARKER.findall(message):
                if writer == self.own:
                    self.echoes_seen += 1
                else:
                    self.counters.deliver(now, int(sent, 16))
                source = self.local.get(writer)
                if source is not None:
                    source.ack(int(seq, 16))
        elif kind is Kind.STEP2:
            if not self.synced.done():
                self.counters.synced_us.add((now - self.started_ns) / 1000)
                self.synced.set_result(None)
        elif kind is Kind.STEP1:
            self.send(self.codec.step2_empty())
        elif kind is Kind.DENIED and not self.synced.done():
            self.synced.set_exception(ConnectionError("permission denied"))

    def ack(self, seq: int) -> None:
        if seq >= self.acked:
            self.acked = seq + 1
            self.progress.set()

    def keepalive(self) -> None:
        self.awareness_clock += 1
        self.send(self.codec.awareness(self.client_id, self.awareness_clock))

    def close(self) -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_close(1000)
            self._flush()
