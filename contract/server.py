"""uvicorn without its signal handlers, and the drain-first signal handling that replaces them.

uvicorn's own handlers would close every WebSocket before the app can flush and hand off, so
they are replaced: the first SIGTERM/SIGINT runs ``on_stop`` (drain: flush, close clients with
1012) and only then lets the server shut down; a second signal stops at once.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

import anyio
import uvicorn
from starlette.types import ASGIApp


class Server(uvicorn.Server):
    """uvicorn without its own signal handlers (the caller owns signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals are ours (see serve)

    def release_sockets(self) -> None:
        """Stops serving on the sockets uvicorn was given, whether or not its shutdown ran (a
        cancelled ``serve`` skips it). Closing such a socket while the loop still watches it
        leaves its descriptor number registered: the next socket that gets the number (the
        next server's listener in the same loop) is never polled and never accepts."""
        for served in self.servers:
            served.close()


def uvicorn_config(app: ASGIApp) -> uvicorn.Config:
    """uvicorn for an HTTP app served on a private socket (``contract.edge.private_socket``), with
    its lifespan: the program's public port and its WebSockets are its own."""
    return uvicorn.Config(
        app,
        ws="none",
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


class Stoppable(Protocol):
    """A server run until asked to stop (``should_exit``) or to stop at once (``force_exit``),
    as ``uvicorn.Server`` is."""

    should_exit: bool
    force_exit: bool

    async def serve(self) -> None: ...


async def serve(server: Stoppable, on_stop: Callable[[], Awaitable[None]]) -> None:
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    if server.should_exit:
                        server.force_exit = True
                        return
                    with anyio.CancelScope(shield=True):
                        await on_stop()
                    server.should_exit = True

        tg.start_soon(watch_signals)
        await server.serve()
        tg.cancel_scope.cancel()
