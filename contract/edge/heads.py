"""HTTP/1.1 heads over bytes (no I/O): the rules every head on a public port is held to.

Parsing is websockets' sans-I/O HTTP/1.1 parser (``websockets.http11``), the one the worker's
WebSockets use anyway, so the router and the worker read heads with one codec. What is ours:

- **the size limit**, on the whole head, complete or not: a head larger than
  ``MAX_HEAD_BYTES`` is refused 431 whether it arrives in pieces or in one read;
- **one value for a header that must have one**: a repeated ``Sec-WebSocket-Key`` or
  ``X-Collab-Router`` is the client's mistake (400), never a crash of ours (websockets'
  ``Headers.get`` raises on a repeated name);
- **internal headers are ours**: the ``X-Collab-*`` headers (``INTERNAL_PREFIX``) tell a
  worker what a router decided (``contract.routing``); a router removes any a client sent
  before adding its own (``router.handshake``).

Errors form one small tree; ``status`` is the HTTP answer the peer gets::

    HeadError (ValueError)          status 400
    ├── HeadTooLarge                status 431
    └── RepeatedHeader              status 400
"""

from __future__ import annotations

from collections.abc import Generator
from http import HTTPStatus
from typing import TypeVar

from websockets.datastructures import Headers
from websockets.exceptions import SecurityError
from websockets.http11 import Request, Response
from websockets.streams import StreamReader

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 10.0  # a connection that has not sent a whole head by then is closed
INTERNAL_PREFIX = "x-collab-"  # headers a router adds; a client's own are removed
_END = b"\r\n\r\n"

T = TypeVar("T")


class HeadError(ValueError):
    """A head that cannot be used; ``str()`` says why, ``status`` is the answer (400)."""

    status = HTTPStatus.BAD_REQUEST


class HeadTooLarge(HeadError):
    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


class RepeatedHeader(HeadError):
    """A header that must have one value came more than once."""


def head_end(buffer: bytes | bytearray) -> int | None:
    """The size of the head at the start of ``buffer`` (through its blank line); None while it
    is incomplete. HeadTooLarge when the head is, or would be, over ``MAX_HEAD_BYTES``."""
    end = buffer.find(_END, 0, MAX_HEAD_BYTES)
    if end >= 0:
        return end + len(_END)
    if len(buffer) >= MAX_HEAD_BYTES:
        raise HeadTooLarge(f"HTTP head larger than {MAX_HEAD_BYTES} bytes")
    return None


def is_websocket_upgrade(head: bytes) -> bool:
    """``Upgrade: websocket`` and an ``upgrade`` token in ``Connection`` (what uvicorn checked).

    A cheap look at the bytes, before any parsing: most heads are one or the other at once.
    """
    lowered = head.lower()
    if b"websocket" not in lowered:
        return False
    upgrade, connection = b"", b""
    for line in lowered.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip()
        if name == b"upgrade":
            upgrade = value.strip()
        elif name == b"connection":
            connection = value
    return upgrade == b"websocket" and b"upgrade" in (t.strip() for t in connection.split(b","))


def _run(parser: Generator[None, None, T]) -> T:
    """Drives a websockets parser over a reader that already holds the whole head."""
    try:
        next(parser)
    except StopIteration as done:
        value: T = done.value
        return value
    raise HeadError("incomplete HTTP head")


def parse_request(head: bytes) -> Request:
    """The request in ``head`` (a whole head, as ``head_end`` measured it)."""
    reader = StreamReader()
    reader.feed_data(head)
    try:
        return _run(Request.parse(reader.read_line))
    except SecurityError as exc:  # a line over 8 KiB, over 128 headers
        raise HeadTooLarge(str(exc)) from None
    except (ValueError, EOFError, NotImplementedError) as exc:  # UnicodeDecodeError is one
        raise HeadError(str(exc) or type(exc).__name__) from None


def parse_response(head: bytes) -> Response:
    """The status line and headers of the response in ``head``; its body is not read (the
    router needs only the head of a worker's answer to its upgrade)."""
    reader = StreamReader()
    reader.feed_data(head)
    try:
        # ``proxy=True`` is websockets' mode for a proxy's CONNECT answer: the head alone.
        # It also admits HTTP/1.0, which no worker sends; the caller checks the status.
        return _run(Response.parse(reader.read_line, reader.read_exact, reader.read_to_eof, True))
    except SecurityError as exc:
        raise HeadTooLarge(str(exc)) from None
    except (ValueError, EOFError, NotImplementedError) as exc:
        raise HeadError(str(exc) or type(exc).__name__) from None


def single(headers: Headers, name: str) -> str | None:
    """The one value of header ``name``, None when absent; RepeatedHeader when repeated."""
    values = headers.get_all(name)
    if len(values) > 1:
        raise RepeatedHeader(f"the {name} header must be sent once, not {len(values)} times")
    return values[0] if values else None


def http_answer(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A whole plain-text HTTP/1.1 answer after which the connection closes."""
    body = (message + "\n").encode()
    return Response(
        status,
        HTTPStatus(status).phrase,
        Headers(
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                *headers,
                ("Connection", "close"),
            ]
        ),
        body,
    ).serialize()
