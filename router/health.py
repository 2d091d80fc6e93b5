"""A worker's ``/readyz``, asked over one kept-alive HTTP/1.1 connection per worker.

The router asks every worker about every second. Through httpx one such request cost the
router's event loop 1.2-1.8 ms of CPU (client, transport, pool, anyio streams and h11 around a
200-byte answer); a health round landing inside a fan-out burst held the relay that long. Here a
request is one write and one read on a connection kept from the last round, and the answer is
parsed with websockets' sans-I/O HTTP/1.1 parser, the codec the router already uses for heads
(router/handshake.py): about a tenth of the CPU (docs/benchmarks.md, "Router vs nginx").

Errors (``ProbeError``) are the caller's to turn into ``down``; a failed or timed-out request
drops its connection, so the next round starts on a fresh one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.http11 import Response
from websockets.streams import StreamReader

READ_CHUNK = 65_536
MAX_ANSWER = 1 << 20  # a readiness body is a few hundred bytes; more is not a worker


class ProbeError(Exception):
    """No usable answer: refused, reset, timed out, not HTTP, or a body that is not JSON."""


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class HealthProbe:
    """One kept-alive connection per worker address, used by one request at a time."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], _Connection] = {}

    async def readyz(
        self,
        host: str,
        port: int,
        timeout: float,  # noqa: ASYNC109 - a deadline per call
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of ``GET /readyz``; ProbeError when there is none."""
        # Taken out of the pool while in use: a second caller (an admin drain's refresh during
        # a round) opens its own connection instead of interleaving with this one.
        conn = self._idle.pop((host, port), None)
        try:
            async with asyncio.timeout(timeout):
                if conn is None:
                    reader, writer = await asyncio.open_connection(host, port)
                    conn = _Connection(reader, writer)
                status, body, keep = await self._ask(conn, host, port)
        except (OSError, EOFError, TimeoutError, ValueError, LookupError) as exc:
            if conn is not None:
                conn.close()
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise ProbeError(error) from None
        except BaseException:  # cancelled mid-request: the connection's state is unknown
            if conn is not None:
                conn.close()
            raise
        if keep and (host, port) not in self._idle:
            self._idle[(host, port)] = conn
        else:
            conn.close()
        return status, body

    async def _ask(
        self, conn: _Connection, host: str, port: int
    ) -> tuple[int, dict[str, Any], bool]:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        conn.writer.write(f"GET /readyz HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        stream = StreamReader()
        parser = Response.parse(stream.read_line, stream.read_exact, stream.read_to_eof)
        received = 0
        while True:
            try:
                next(parser)
            except StopIteration as done:
                response: Response = done.value
                break
            data = await conn.reader.read(READ_CHUNK)
            received += len(data)
            if not data:
                stream.feed_eof()
            elif received > MAX_ANSWER:
                raise ValueError("readiness answer too large")
            else:
                stream.feed_data(data)
        try:
            body = json.loads(response.body or b"")
        except ValueError:
            raise ValueError(f"HTTP {response.status_code} without a JSON body") from None
        if not isinstance(body, dict):
            raise ValueError("readyz body is not a JSON object")
        keep = (
            response.headers.get("Connection", "").lower() != "close"
            and not stream.eof
            and not stream.buffer
        )
        return response.status_code, body, keep

    def close(self) -> None:
        for conn in self._idle.values():
            conn.close()
        self._idle.clear()
