"""A y-websocket (or Hocuspocus) load generator: many rooms, many clients, a writing rate.

    python -m bench.loadgen --url ws://127.0.0.1:8081/yjs --rooms 1 --clients 50 --writers 1 \\
        --rate 50 --duration 10

Every client is a real protocol peer: it opens a WebSocket (offering permessage-deflate, as
browsers and Node `ws` do), sends sync step 1 (Hocuspocus: auth first), answers the server's step
1, and counts as connected once it has the server's step 2. Then, from a common start time,
writers send real Yjs updates (bench/wire.py) and every client measures, for each update of
another writer it receives, the fan-out latency from the timestamp in the update.

Rates are per writer (updates/s) or `max`: each writer keeps at most `--window` updates in
flight, an update leaving flight once any client of this process has received it (another writer
of the room in this process, or the writer itself if the server echoes to the sender), so the
loop closes the same way whether or not a server echoes.

`--select writers|readers` and `--shard i/n` split one shape's clients across processes (the
runner puts writers and readers in different processes so that receiving never delays sending).
`--route NAME=URL` (repeated) sends each y-websocket client straight to the worker that owns its
room's session, placed as the router places it (`router.ring.owner` over the NAMEs), instead of
to `--url`: the direct baseline of `python -m bench.router`.
With `--coordinated`, the process prints `{"event": "connected", ...}`, waits for a line
`{"start_ns": ..., "end_ns": ...}` on stdin, and prints `{"event": "done", ...}` at the end;
without it, it starts one second after connecting and prints only the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.uri import parse_uri

from bench.peer import Client, Counters
from bench.wire import Codec, Framing, TextAppender, check_updates, marker
from router.ring import owner

NS = 1_000_000_000
KEEPALIVE_S = 15  # y-websocket renews its awareness state this often


@dataclass(frozen=True)
class Plan:
    url: str
    framing: Framing
    rooms: int
    clients: int
    writers: int
    rate: float | None  # updates/s per writer; None = as fast as the server takes them
    duration: float
    select: str = "all"
    shard: tuple[int, int] = (0, 1)
    prefix: str = "bench"
    window: int = 8
    grace: float = 2.0
    concurrency: int = 64
    deflate: bool = True
    routes: tuple[tuple[str, str], ...] = ()  # (worker name, its URL): route rooms directly

    def document(self, room: int) -> str:
        return f"{self.prefix}-{room}/bench.txt"

    def base_url(self, document: str) -> str:
        """`url`, or with `routes` the URL of the worker that owns the document's session."""
        if not self.routes:
            return self.url
        urls = dict(self.routes)
        name = owner(document.partition("/")[0], urls)
        assert name is not None
        return urls[name]

    def url_for(self, document: str) -> str:
        """y-websocket appends the room to the URL; Hocuspocus names it in every message."""
        base = self.base_url(document)
        return base if self.framing is Framing.HOCUSPOCUS else f"{base}/{document}"

    def members(self) -> list[tuple[int, bool]]:
        """(room, is_writer) of the clients this process runs."""
        index, count = self.shard
        chosen = []
        for room in range(self.rooms):
            for client in range(self.clients):
                writer = client < self.writers
                if self.select == "writers" and not writer:
                    continue
                if self.select == "readers" and writer:
                    continue
                if (room * self.clients + client) % count == index:
                    chosen.append((room, writer))
        return chosen


async def sleep_until(ns: int) -> None:
    delay = (ns - time.monotonic_ns()) / NS
    if delay > 0:
        await asyncio.sleep(delay)


class LoadGen:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.counters = Counters()
        self.clients: list[Client] = []
        self.local: dict[bytes, Client] = {}

    async def connect_all(self) -> None:
        gate = asyncio.Semaphore(self.plan.concurrency)
        loop = asyncio.get_running_loop()

        async def one(room: int, writer: bool) -> None:
            async with gate:
                document = self.plan.document(room)
                url = self.plan.url_for(document)
                host, port = _host_port(url)
                client = Client(
                    Codec(self.plan.framing, document),
                    url,
                    writer=writer,
                    counters=self.counters,
                    local=self.local,
                    deflate=self.plan.deflate,
                )
                try:
                    async with asyncio.timeout(30):
                        await loop.create_connection(lambda: client, host, port)
                        await client.synced
                except (OSError, TimeoutError, ConnectionError) as exc:
                    self.counters.failed += 1
                    if len(self.counters.errors) < 5:
                        self.counters.errors.append(f"{type(exc).__name__}: {exc}")
                    if client.transport is not None:
                        client.transport.abort()
                    return
                self.counters.connected += 1
                self.clients.append(client)

        await asyncio.gather(*(one(room, writer) for room, writer in self.plan.members()))

    async def run(self, start_ns: int, end_ns: int) -> None:
        self.counters.start_ns, self.counters.end_ns = start_ns, end_ns
        writers = [c for c in self.clients if c.writer]
        async with asyncio.TaskGroup() as tg:
            keepalive = tg.create_task(self._keepalive())
            for client in writers:
                tg.create_task(self._write(client, start_ns, end_ns))
            await sleep_until(end_ns + int(self.plan.grace * NS))
            keepalive.cancel()
        self.counters.closed_early = sum(1 for c in self.clients if c.lost.done())

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            for client in self.clients:
                client.keepalive()

    async def _write(self, client: Client, start_ns: int, end_ns: int) -> None:
        appender = TextAppender(client.client_id)

        def send() -> None:
            now = time.monotonic_ns()
            update = appender.update(marker(now, client.client_id, client.next_seq))
            client.send(client.codec.update(update))
            client.next_seq += 1
            self.counters.sent += 1

        if self.plan.rate is None:
            await self._write_max(client, start_ns, end_ns, send)
            return
        period = int(NS / self.plan.rate)
        due = start_ns + random.randrange(period)  # spread writers over the first period
        while True:
            await sleep_until(due)
            now = time.monotonic_ns()
            if now >= end_ns or client.lost.done():
                return
            send()
            due += period
            if due < now:  # fell behind: skip what is overdue, never burst
                missed = (now - due) // period + 1
                self.counters.skipped += missed
                due += missed * period

    async def _write_max(
        self, client: Client, start_ns: int, end_ns: int, send: Callable[[], None]
    ) -> None:
        await sleep_until(start_ns)
        while time.monotonic_ns() < end_ns and not client.lost.done():
            if not client.writable.is_set():
                await client.writable.wait()
            if client.next_seq - client.acked < self.plan.window:
                send()
                continue
            client.progress.clear()
            try:
                async with asyncio.timeout(5):
                    await client.progress.wait()
            except TimeoutError:
                self.counters.errors.append("max-rate writer: nothing acknowledged for 5 s")
                return

    async def close_all(self) -> None:
        for client in self.clients:
            client.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                await asyncio.gather(*(c.lost for c in self.clients))
        for client in self.clients:
            if client.transport is not None and not client.lost.done():
                client.transport.abort()

    def result(self) -> dict[str, Any]:
        c = self.counters
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "clients": len(self.plan.members()),
            "writers": sum(1 for cl in self.clients if cl.writer),
            "connected": c.connected,
            "failed": c.failed,
            "closed_early": c.closed_early,
            "deflated": c.deflated,
            "messages_sent": c.messages_sent,
            "messages_received": c.messages_received,
            "sent": c.sent,
            "skipped": c.skipped,
            "delivered_window": c.delivered_window,
            "delivered_total": c.delivered_total,
            "echo": any(c.echoes_seen for c in self.clients if c.writer)
            if self.counters.sent
            else None,
            "latency_us": c.latency_us.to_json(),
            "open_us": c.open_us.to_json(),
            "synced_us": c.synced_us.to_json(),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "errors": c.errors,
        }


def _host_port(url: str) -> tuple[str, int]:
    uri = parse_uri(url)
    return uri.host, uri.port


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main_async(plan: Plan, coordinated: bool) -> dict[str, Any]:
    gen = LoadGen(plan)
    await gen.connect_all()
    if coordinated:
        _emit({"event": "connected", "connected": gen.counters.connected})
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            raise SystemExit("coordinator went away")
        window = json.loads(line)
        start_ns, end_ns = int(window["start_ns"]), int(window["end_ns"])
    else:
        start_ns = time.monotonic_ns() + NS
        end_ns = start_ns + int(plan.duration * NS)
    await gen.run(start_ns, end_ns)
    result = gen.result()
    await gen.close_all()
    return result


def parse_args(argv: list[str] | None = None) -> tuple[Plan, bool]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--url", required=True, help="yws: ws://H:P/yjs (room appended); hocuspocus: ws://H:P"
    )
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="yws only, repeated: connect each room to the URL of the worker NAME that owns its "
        "session (router.ring placement) instead of --url",
    )
    p.add_argument("--framing", choices=[f.value for f in Framing], default="yws")
    p.add_argument("--rooms", type=int, default=1)
    p.add_argument("--clients", type=int, default=2, help="clients per room")
    p.add_argument("--writers", type=int, default=1, help="writers per room (the first clients)")
    p.add_argument("--rate", default="5", help="updates/s per writer, or 'max'")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--idle", action="store_true", help="connect only: no writers")
    p.add_argument("--select", choices=["all", "writers", "readers"], default="all")
    p.add_argument("--shard", default="0/1", help="i/n: every n-th client, from the i-th")
    p.add_argument("--prefix", default=f"bench{random.getrandbits(24):06x}", help="room names")
    p.add_argument("--window", type=int, default=8, help="in-flight updates per max-rate writer")
    p.add_argument("--grace", type=float, default=2.0, help="seconds to keep counting after")
    p.add_argument("--concurrency", type=int, default=64, help="handshakes at once")
    p.add_argument("--no-deflate", action="store_true", help="do not offer permessage-deflate")
    p.add_argument("--coordinated", action="store_true", help="start on a line from stdin")
    a = p.parse_args(argv)
    index, count = (int(x) for x in a.shard.split("/"))
    routes = tuple((name, url.rstrip("/")) for name, _, url in (r.partition("=") for r in a.route))
    if routes and (a.framing != "yws" or not all(name and url for name, url in routes)):
        p.error("--route takes NAME=URL and works with --framing yws only")
    plan = Plan(
        url=a.url.rstrip("/"),
        framing=Framing(a.framing),
        rooms=a.rooms,
        clients=a.clients,
        writers=0 if a.idle else min(a.writers, a.clients),
        rate=None if a.rate == "max" else float(a.rate),
        duration=a.duration,
        select=a.select,
        shard=(index, count),
        prefix=a.prefix,
        window=a.window,
        grace=a.grace,
        concurrency=a.concurrency,
        deflate=not a.no_deflate,
        routes=routes,
    )
    return plan, a.coordinated


def _self_check() -> None:
    """The hand-made updates are what a Yjs client would send (checked against pycrdt)."""
    appender = TextAppender(random.getrandbits(32))
    parts = [marker(i, appender.client_id, i) for i in range(3)]
    check_updates([appender.update(p) for p in parts], b"".join(parts).decode())


def main(argv: list[str] | None = None) -> None:
    plan, coordinated = parse_args(argv)
    _self_check()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        result = asyncio.run(main_async(plan, coordinated))
    else:
        result = uvloop.run(main_async(plan, coordinated))
    _emit({"event": "done", **result})


if __name__ == "__main__":
    main()
