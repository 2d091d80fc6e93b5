"""Network paths on loopback (``--loopback``): one TCP proxy per path, cut and slowed in user space.

A ``Link`` stands between a connecting host and a listening one (a router and a worker, a
worker and storage, the client host and a router). What it does to a real network's faults:

- **cut** one direction (or both): bytes in that direction are held, not dropped: the proxy stops
  forwarding them (and, once its small queue is full, stops reading, so the sender's socket
  fills), and forwards them when the cut heals, as TCP delivers what it retransmits after a
  partition ends. New connections are refused while any direction is cut: a proxy in user
  space cannot drop a SYN, so a connect fails at once instead of timing out (a reader sees
  "gone" where a real partition would look "silent"; docs/reliability.md says why that
  matters, and the README here lists it as a difference).
- **delay**: every chunk a host sends is held for the delay (± jitter), in order, pipelined (the
  delay adds latency, not a throughput limit).
- **loss** has no byte-stream equivalent (TCP hides it); it is shown the way TCP shows it: with
  the loss probability per chunk, the chunk (and everything behind it) stalls for a
  retransmission timeout, 0.2-0.6 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Direction = Literal["forward", "back"]
_CHUNK = 65536
_QUEUE = 64


@dataclass(frozen=True)
class Shape:
    """What a host's sends suffer now (its "netem" state)."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0


class Link:
    """``src`` connects to ``dst``'s ``target`` through ``127.0.0.1:port``; "forward" is src→dst."""

    def __init__(
        self,
        src: str,
        dst: str,
        target: tuple[str, int],
        port: int,
        shape_of: Callable[[str], Shape],
        seed: int,
    ) -> None:
        self.src, self.dst, self.target, self.port = src, dst, target, port
        self._shape_of = shape_of
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._holds: dict[Direction, set[str]] = {"forward": set(), "back": set()}
        self._open: dict[Direction, asyncio.Event] = {
            "forward": asyncio.Event(),
            "back": asyncio.Event(),
        }
        for event in self._open.values():
            event.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def cut(self) -> bool:
        return any(self._holds.values())

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accepted, "127.0.0.1", self.port)

    async def close(self) -> None:
        await self._stop_listening()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)

    async def hold(self, direction: Direction, fault: str) -> None:
        self._holds[direction].add(fault)
        self._open[direction].clear()
        await self._stop_listening()

    async def release(self, direction: Direction, fault: str) -> None:
        self._holds[direction].discard(fault)
        if not self._holds[direction]:
            self._open[direction].set()
        if not self.cut:
            await self.start()

    async def release_all(self) -> None:
        for direction in self._holds:
            self._holds[direction].clear()
            self._open[direction].set()
        await self.start()

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        ends: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, Direction, str]] = [
            (reader, up_writer, "forward", self.src),
            (up_reader, writer, "back", self.dst),
        ]
        for src, dst, direction, sender in ends:
            task = asyncio.get_running_loop().create_task(self._carry(src, dst, direction, sender))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _carry(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        direction: Direction,
        sender: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_QUEUE)

        async def read() -> None:
            last_due = 0.0
            try:
                while data := await src.read(_CHUNK):
                    shape = self._shape_of(sender)
                    delay = shape.delay_s
                    if shape.jitter_s:
                        delay += self._rng.uniform(-shape.jitter_s, shape.jitter_s)
                    if shape.loss and self._rng.random() < shape.loss:
                        delay += self._rng.uniform(0.2, 0.6)
                    last_due = max(last_due, loop.time() + max(0.0, delay))
                    await queue.put((last_due, data))
            except OSError:
                pass
            finally:
                await queue.put(None)

        reading = loop.create_task(read())
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                await self._open[direction].wait()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            self._writers.discard(dst)
            dst.close()
