"""The private Unix socket a program's HTTP app listens on, behind its public port.

Both programs serve their public port on asyncio protocols of their own (the router relays
WebSocket bytes, the worker speaks WebSocket itself) and pass plain HTTP requests, as bytes, to
a Starlette app that uvicorn serves on this socket. On Linux it is an abstract socket (no file,
so a read-only root filesystem is fine); elsewhere a socket file in a private temporary
directory.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from typing import TypeVar

P = TypeVar("P", bound=asyncio.BaseProtocol)


class PrivateSocket:
    """One process's private socket: ``listen`` once for uvicorn, ``connect`` per request."""

    def __init__(self, name: str) -> None:
        self._scratch = None if sys.platform == "linux" else tempfile.mkdtemp(prefix=f"{name}-")
        self.path = (
            f"\0{name}-{os.getpid()}-{secrets.token_hex(8)}"
            if self._scratch is None
            else os.path.join(self._scratch, "http.sock")
        )

    def listen(self, backlog: int = 128) -> socket.socket:
        """The bound, listening socket, to hand to ``uvicorn.Server.serve(sockets=...)``.

        Bound before uvicorn starts, so the first relayed request never finds it missing.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        sock.listen(backlog)
        return sock

    async def connect(self, factory: Callable[[], P]) -> tuple[asyncio.BaseTransport, P]:
        """A new connection to the HTTP app, driven by ``factory()``'s protocol.

        Connected by hand: uvloop's ``create_unix_connection`` refuses abstract socket names
        (``OSError: [Errno 22]``, MagicStack/uvloop#528).
        """
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, self.path)
        except OSError:
            sock.close()
            raise
        return await loop.create_unix_connection(factory, sock=sock)

    def remove(self) -> None:
        """Removes the socket file's directory, if there is one (not needed on Linux)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
