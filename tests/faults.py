"""Network faults for tests, on loopback: a TCP proxy that can be cut and healed.

Put it between two real processes (a worker and its storage, a router and a worker) and
``cut()`` it to partition them:

- ``"blackhole"`` (a partition): bytes stop flowing both ways on open connections, so their
  requests time out; new connections are refused (a proxy in user space cannot drop a SYN, and
  a connection it accepted but never forwarded would hang far longer than a real connect);
- ``"refuse"``: open connections are reset and new ones refused (nothing listens any more).

``heal()`` closes whatever the cut left hanging (those peers reconnect) and forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from tests.conftest import s3_env
from tests.s3server import free_port

Mode = Literal["blackhole", "refuse"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.cut_mode: Mode | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_all()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)

    async def cut(self, mode: Mode = "blackhole") -> None:
        self.cut_mode = mode
        if self._server is not None:
            self._server.close()
            self._server = None
        if mode == "refuse":
            self._drop_all(reset=True)

    async def heal(self) -> None:
        self._drop_all()
        self.cut_mode = None
        if self._server is None:
            await self.start()

    def _drop_all(self, *, reset: bool = False) -> None:
        for writer in list(self._writers):
            if reset:
                with contextlib.suppress(Exception):
                    writer.transport.abort()
            writer.close()
        self._writers.clear()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.cut_mode is not None:
            return  # accepted, never forwarded: the peer times out
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                if self.cut_mode is not None:
                    continue  # swallowed: a partition drops, it does not close
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if self.cut_mode is None:
                dst.close()


@asynccontextmanager
async def s3_behind_proxy(
    store_kwargs: dict[str, Any],
) -> AsyncIterator[tuple[dict[str, str], TcpProxy]]:
    """A worker's MINIO_* environment reaching the S3 server of ``store_kwargs`` through a
    proxy, and the proxy: cutting it is an outage of the path alone (the server keeps running,
    with what it stored), a fault stopping the server cannot show."""
    async with tcp_proxy(store_kwargs["endpoint"], store_kwargs["port"]) as proxy:
        through = {**store_kwargs, "endpoint": "127.0.0.1", "port": proxy.port}
        yield s3_env(through), proxy


@asynccontextmanager
async def tcp_proxy(target_host: str, target_port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(target_host, target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
