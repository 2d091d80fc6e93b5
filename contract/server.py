"""Run an ASGI app on uvicorn with our own drain-first signal handling.

uvicorn's own handlers would close every WebSocket before the app can flush and hand off, so
they are replaced: the first SIGTERM/SIGINT runs ``on_stop`` (drain: flush, close clients with
1012) and only then lets uvicorn shut down; a second signal stops at once.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator

import anyio
import uvicorn
from starlette.types import ASGIApp


class Server(uvicorn.Server):
    """uvicorn without its own signal handlers (the caller owns signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals are ours (see serve)


def uvicorn_config(app: ASGIApp, host: str, port: int, max_message_bytes: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # permessage-deflate off on purpose: it doubles memory per idle connection and costs
        # CPU on every small Yjs update (docs/benchmarks.md).
        ws_per_message_deflate=False,
        ws_max_size=max_message_bytes,
        ws="websockets-sansio",
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


async def serve(config: uvicorn.Config, on_stop: Callable[[], Awaitable[None]]) -> None:
    server = Server(config)
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
