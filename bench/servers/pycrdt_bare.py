"""A bare pycrdt-websocket server: `ASGIServer(WebsocketServer())` on uvicorn, nothing else.

The comparison baseline of the benchmark. Run: `python -m bench.servers.pycrdt_bare --port P`.

permessage-deflate is OFF by default (`--deflate` turns it on). uvicorn accepts the extension
whenever a client offers it, and Node `ws`/browsers offer it: a compressor and decompressor per
socket roughly doubled this server's memory per idle connection (86 vs 45 KB) while Yjs updates are
small and barely compress.

One fix on top of the library, so that the baseline can be measured at all: in pycrdt-websocket
0.16.5, clients that open a new room at the same moment can wait forever for their sync step 2
(`WebsocketServer.start_room` lets each of them call `YRoom.start`, and all but the first block on
a lock that the first holds for the room's whole life). `BareWebsocketServer` opens rooms one at a
time; the per-message path is untouched.
"""

from __future__ import annotations

import argparse
import asyncio

import anyio
import uvicorn
from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom


class BareWebsocketServer(WebsocketServer):
    """pycrdt-websocket's server, with rooms opened one at a time (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(auto_clean_rooms=True)
        self._opening = anyio.Lock()

    async def get_room(self, name: str) -> YRoom:
        async with self._opening:
            return await super().get_room(name)


async def serve(host: str, port: int, deflate: bool) -> None:
    websocket_server = BareWebsocketServer()
    config = uvicorn.Config(
        ASGIServer(websocket_server),
        host=host,
        port=port,
        ws_per_message_deflate=deflate,
        log_level="warning",
        lifespan="off",
    )
    async with websocket_server:
        await uvicorn.Server(config).serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deflate", action="store_true", help="accept permessage-deflate")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.deflate))


if __name__ == "__main__":
    main()
